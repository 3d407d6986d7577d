"""Small builders for database tests: real rows through the real queries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from db import catalog, experiments, results
from db.models import Clip, Experiment, ExperimentStatus

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
RATE_POINTS = (0.2, 0.5, 0.8)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_clip(session: Session, name: str = "mix") -> Clip:
    return catalog.get_or_create_clip(
        session, sha256=sha(f"clip:{name}"), source=f"synthetic:{name}", width=176, height=144, n_frames=4, fps=30.0
    )


def make_experiment(
    session: Session,
    clip: Clip,
    *,
    code: str = "def f(): pass",
    rate_points: tuple[float, ...] = RATE_POINTS,
    config: dict | None = None,
    campaign_id: int | None = None,
    to: ExperimentStatus = ExperimentStatus.QUEUED,
    lease_seconds: float | None = 60,
    now: datetime = T0,
    host: str = "worker-1",
) -> Experiment:
    """An experiment walked through the legal path up to status ``to``."""
    candidate = catalog.create_candidate(session, generator="user", code=code, ast_hash=sha(code), campaign_id=campaign_id)
    experiment = experiments.create_experiment(
        session,
        clip_id=clip.id,
        config=config or {"device": "cpu", "width": 176, "height": 144, "fps": 30.0},
        rate_points=rate_points,
        anchors=["x264"],
        candidate_id=candidate.id,
        campaign_id=campaign_id,
        now=now,
    )
    path = [ExperimentStatus.SANITIZING, ExperimentStatus.ENCODING, ExperimentStatus.SCORING]
    if to is not ExperimentStatus.QUEUED:
        for status in path[: path.index(to) + 1]:
            assert experiments.transition(
                session, experiment.id, status, lease_seconds=lease_seconds, worker_host=host, now=now
            )
    session.flush()
    return experiment


def points(
    experiment: Experiment, clip: Clip, *, tag: str | None = None, psnr: float = 35.0
) -> list[results.RatePointResult]:
    """Plausible measured rate points; bitstream hashes derive from ``tag``
    (default: unique to the experiment), so equal tags mean equal outputs."""
    tag = tag if tag is not None else f"exp{experiment.id}"
    out = []
    for i, quality in enumerate(experiment.rate_points):
        n_bytes = 1000 * (i + 1)
        out.append(
            results.RatePointResult(
                rate_index=i,
                quality=quality,
                path=f"/artifacts/{experiment.id}/rate{i}.cfv",
                n_bytes=n_bytes,
                sha256=sha(f"bitstream:{tag}:{i}"),
                n_frames=clip.n_frames,
                bits=8 * n_bytes,
                kbps=8 * n_bytes * clip.fps / clip.n_frames / 1000,
                bpp=8 * n_bytes / (clip.n_frames * clip.width * clip.height),
                psnr_rgb=psnr + 3 * i - 1,
                psnr_y=psnr + 3 * i,
                psnr_rgb_pooled=psnr + 3 * i - 1.2,
                psnr_y_pooled=psnr + 3 * i - 0.2,
                ssim_y=0.9 + 0.02 * i,
                ms_ssim=0.95 + 0.01 * i,
                ms_ssim_scales=3,
                encode_seconds=0.5,
                decode_seconds=0.25,
                encode_fps=8.0,
                decode_fps=16.0,
                peak_rss_bytes=None,
                evaluator_version="cf-eval-test",
                metrics_version="cf-metrics-test",
                clip_sha256=clip.sha256,
            )
        )
    return out


def score(
    bd_rate: float | None, *, anchor: str = "x264", metric: str = "psnr_y", reason: str | None = None
) -> results.ScoreResult:
    return results.ScoreResult(
        anchor_codec=anchor,
        metric=metric,
        bd_rate=bd_rate,
        bd_psnr=None if bd_rate is None else -bd_rate / 25,
        overlap=None if bd_rate is None else 0.9,
        reason=reason,
        anchor_version="cf-anchor-test",
        metrics_version="cf-metrics-test",
    )


def finished(
    session: Session, clip: Clip, bd_rate: float, *, code: str, campaign_id: int | None = None, now: datetime = T0
) -> Experiment:
    """A succeeded experiment with measurements and an x264 psnr_y score of ``bd_rate``."""
    experiment = make_experiment(
        session, clip, code=code, campaign_id=campaign_id, to=ExperimentStatus.SCORING, now=now
    )
    outcome = results.record_result(session, experiment.id, points(experiment, clip), [score(bd_rate)], now=now)
    assert outcome.status is ExperimentStatus.SUCCEEDED
    return experiment


def later(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


__all__ = ["RATE_POINTS", "T0", "finished", "later", "make_clip", "make_experiment", "points", "score", "sha"]
