"""Builds the real results database and the report the report tests share.

The database holds real measurements: the reference codecs are evaluated by
``evaluation.pipeline.measure_candidate`` on tiny synthetic clips (trusted
code, so the in-process runner) and the results are stored through
``db.catalog``, ``db.experiments`` and ``db.results`` the way the pipeline's tasks store them. It contains

* clip 1 (``CLIP1``) with anchor results stored for x264, x265 and SVT-AV1, and
  a lineage of three candidates: root ``intra_dct`` -> a mutated copy (finer
  quantiser at high quality) -> ``inter_mc``; plus a candidate whose decoder
  raises (failed at ``decode``) and one the sanitizer rejects;
* clip 2 (``CLIP2``) with one ``torch_dct`` experiment that asked only for
  x264 and no stored anchor rows, so the report has to measure the anchors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from codecfleet.report import Report, ReportOptions, build_report
from db import migrate
from db import catalog, experiments as db_experiments, results
from db.models import ExperimentStatus
from db.session import make_engine, session_factory, session_scope
from evaluation import anchors as anchors_mod
from evaluation.anchors import encoder_settings
from evaluation.pipeline import measure_candidate
from evaluation.reference import reference_code
from evaluation.runner import InProcessRunner
from evaluation.clip import Clip
from evaluation.video import load_clip
from sandbox.runner import probe_isolation
from sandbox.sanitize import sanitize

CLIP1 = "synthetic:mix@160x96"
CLIP2 = "synthetic:objects@96x64"
FRAMES = 3
RATE_POINTS = (0.2, 0.4, 0.6, 0.8)
ANCHORS = ("x264", "x265", "svtav1")
WORKER = "report-test-host"
CAMPAIGN = "report-test"
OTHER_CAMPAIGN = "report-other"
BROKEN_REASON = "lost the quantiser table"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@dataclass
class ReportFixture:
    url: str
    report: Report
    out_dir: Path
    clip1: Clip
    clip2: Clip
    anchor_cache: Path
    #: candidate ids: root, mutated, inter, torch, broken, rejected
    candidates: dict[str, int]
    #: experiment ids by the same names
    experiments: dict[str, int]
    sandbox_ok: bool


def _store_result(session, experiment_id: int, result: dict, clip: Clip) -> results.RecordOutcome:
    """What the score task does: one RatePointResult per rate point, one ScoreResult per anchor."""
    points = []
    for rp in result["rate_points"]:
        rss = [v for v in (rp["encode_peak_rss_bytes"], rp["decode_peak_rss_bytes"]) if v is not None]
        points.append(
            results.RatePointResult(
                rate_index=rp["index"],
                quality=rp["quality"],
                path=rp["bitstream"],
                n_bytes=rp["bytes"],
                sha256=rp["bitstream_sha256"],
                n_frames=clip.n_frames,
                bits=rp["bits"],
                kbps=rp["kbps"],
                bpp=rp["bpp"],
                psnr_rgb=rp["psnr_rgb"],
                psnr_y=rp["psnr_y"],
                psnr_rgb_pooled=rp["psnr_rgb_pooled"],
                psnr_y_pooled=rp["psnr_y_pooled"],
                ssim_y=rp["ssim_y"],
                encode_seconds=rp["encode_seconds"],
                decode_seconds=rp["decode_seconds"],
                evaluator_version=result["evaluator_version"],
                metrics_version=result["metrics_version"],
                clip_sha256=clip.sha256,
                ms_ssim=rp["ms_ssim"],
                ms_ssim_scales=rp["ms_ssim_scales"],
                psnr_capped_frames=rp["psnr_capped_frames"],
                encode_fps=rp["encode_fps"],
                decode_fps=rp["decode_fps"],
                peak_rss_bytes=max(rss) if rss else None,
            )
        )
    scores = [
        results.ScoreResult(
            anchor_codec=codec,
            metric=bd["metric"],
            bd_rate=bd["bd_rate_pct"],
            bd_psnr=bd["bd_psnr_db"],
            anchor_version=anchors_mod.ANCHOR_VERSION,
            metrics_version=result["metrics_version"],
            reason=bd.get("error"),
        )
        for codec, bd in result["bd"].items()
    ]
    return results.record_result(session, experiment_id, points, scores)


def _store_anchors(session, result: dict) -> None:
    for codec, pts in result["anchors"].items():
        for p in pts:
            # As tasks/experiment.py stores them: every setting, the CRF included.
            settings = encoder_settings(codec, p["crf"])
            results.record_anchor_result(
                session,
                clip_sha256=p["clip_sha256"],
                codec=codec,
                crf=p["crf"],
                settings=settings,
                n_bytes=p["n_bytes"],
                kbps=p["kbps"],
                bpp=p["bpp"],
                psnr_rgb=p["psnr_rgb"],
                psnr_y=p["psnr_y"],
                ssim_y=p["ssim_y"],
                ms_ssim=p["ms_ssim"],
                encode_seconds=p["encode_seconds"],
                decode_seconds=p["decode_seconds"],
                anchor_version=p["anchor_version"],
                metrics_version=p["metrics_version"],
            )


def build_report_fixture(root: Path, url: str | None = None) -> ReportFixture:
    """Evaluate, store and report once, under ``root`` (database: ``url``, default a SQLite file there)."""
    url = url or f"sqlite:///{root / 'codecfleet.db'}"
    migrate.upgrade(url)
    artifacts, anchor_cache = root / "artifacts", root / "anchor-cache"
    clip1 = load_clip(CLIP1, frames=FRAMES)
    clip2 = load_clip(CLIP2, frames=FRAMES)
    runner = InProcessRunner()

    intra = reference_code("intra_dct")
    assert "MIN_SCALE = 0.25" in intra
    sources = {
        "root": ("reference", None, intra),
        "mutated": ("openai", "gpt-test", intra.replace("MIN_SCALE = 0.25", "MIN_SCALE = 0.125")),
        "inter": ("anthropic", "claude-test", reference_code("inter_mc")),
        "torch": ("reference", None, reference_code("torch_dct")),
        "broken": (
            "openai",
            "gpt-test",
            intra
            + "\n\ndef decompress_video_frame(compressed_data, frame_index, config):\n"
            + f"    raise ValueError({BROKEN_REASON!r})\n",
        ),
        "rejected": ("openai", "gpt-test", "import os\n" + intra),
    }
    parents = {"mutated": "root", "inter": "mutated", "broken": "root", "rejected": "root"}
    plan = {  # name -> (clip, anchors asked for, campaign)
        "root": (clip1, ANCHORS, CAMPAIGN),
        "mutated": (clip1, ANCHORS, CAMPAIGN),
        "inter": (clip1, ANCHORS, CAMPAIGN),
        "torch": (clip2, ("x264",), OTHER_CAMPAIGN),
        "broken": (clip1, ANCHORS, CAMPAIGN),
        "rejected": (clip1, ANCHORS, CAMPAIGN),
    }
    candidates: dict[str, int] = {}
    experiments: dict[str, int] = {}
    engine = make_engine(url)
    factory = session_factory(engine)
    try:
        with session_scope(factory) as s:
            campaigns = {name: catalog.create_campaign(s, name).id for name in (CAMPAIGN, OTHER_CAMPAIGN)}
        stored_anchor_clips: set[str] = set()
        for name, (generator, model, source) in sources.items():
            clip, anchors, campaign = plan[name]
            verdict = sanitize(source)
            with session_scope(factory) as s:
                clip_row = catalog.get_or_create_clip(
                    s, sha256=clip.sha256, source=clip.source, width=clip.width, height=clip.height,
                    n_frames=clip.n_frames, fps=clip.fps,
                )
                cand = catalog.create_candidate(
                    s,
                    generator=generator,
                    model=model,
                    prompt=None if model is None else f"improve candidate {parents.get(name)}",
                    raw_reply=None if model is None else source,
                    prompt_tokens=None if model is None else 1200,
                    completion_tokens=None if model is None else 900,
                    parent_ids=[candidates[parents[name]]] if name in parents else [],
                    campaign_id=campaigns[campaign],
                )
                catalog.record_sanitizer_verdict(
                    s, cand.id, accepted=verdict.ok, reason=verdict.reason, code=verdict.code, ast_hash=verdict.ast_hash
                )
                exp = db_experiments.create_experiment(
                    s,
                    clip_id=clip_row.id,
                    config={"width": clip.width, "height": clip.height, "fps": clip.fps, "device": "cpu"},
                    rate_points=RATE_POINTS,
                    anchors=anchors,
                    candidate_id=cand.id,
                    campaign_id=campaigns[campaign],
                )
                candidates[name], experiments[name] = cand.id, exp.id
                eid = exp.id
                db_experiments.transition(s, eid, ExperimentStatus.SANITIZING, worker_host=WORKER, device="cpu",
                             isolation=runner.isolation)
                if not verdict.ok:
                    db_experiments.transition(s, eid, ExperimentStatus.REJECTED, failure_stage="sanitize", error=verdict.reason)
                    continue
            result = measure_candidate(
                verdict.code, clip, list(RATE_POINTS), runner=runner, artifact_dir=artifacts, anchors=anchors,
                anchor_cache_dir=anchor_cache, device="cpu",
            )
            with session_scope(factory) as s:
                db_experiments.transition(s, eid, ExperimentStatus.ENCODING)
                if result["status"] != "succeeded":
                    db_experiments.transition(
                        s, eid, ExperimentStatus.FAILED, failure_stage=result["stage"], error=result["reason"]
                    )
                    continue
                db_experiments.transition(s, eid, ExperimentStatus.SCORING)
                outcome = _store_result(s, eid, result, clip)
                assert outcome.status is ExperimentStatus.SUCCEEDED, outcome
                if clip is clip1 and clip.sha256 not in stored_anchor_clips:
                    _store_anchors(s, result)
                    stored_anchor_clips.add(clip.sha256)
    finally:
        engine.dispose()

    sandbox_ok = probe_isolation("cpu").strict_ok
    out_dir = root / "report-all"
    report = build_report(
        url,
        out_dir,
        options=ReportOptions(anchor_cache_dir=anchor_cache, device="cpu", sandbox_mode="strict"),
    )
    return ReportFixture(url, report, out_dir, clip1, clip2, anchor_cache, candidates, experiments, sandbox_ok)
