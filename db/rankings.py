"""Reading results for prompts and status: the leaderboard (best BD-rate per
candidate), the top candidates with their code, and recent failures. Read-only;
each query's cost follows the number of rows asked for, not the table size."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import FAILURES, Candidate, Clip, Experiment, ExperimentStatus, Score
from db.results import stored_points
from evaluation.results import RatePoint

S = ExperimentStatus


@dataclass(frozen=True)
class RankedCandidate:
    """A candidate's best result against one anchor, with the numbers behind it."""

    rank: int
    candidate_id: int
    experiment_id: int
    clip_sha256: str
    anchor_codec: str
    metric: str
    bd_rate: float
    bd_psnr: float | None
    ast_hash: str | None
    generator: str
    model: str | None
    #: The stored rate points of that experiment (:func:`db.results.stored_points`).
    points: tuple[RatePoint, ...]
    code: str | None = None


@dataclass(frozen=True)
class FailureSummary:
    experiment_id: int
    candidate_id: int | None
    clip_sha256: str
    status: ExperimentStatus
    failure_stage: str | None
    error: str
    finished_at: datetime | None


def leaderboard(
    session: Session,
    *,
    clip_sha256: str | None = None,
    campaign_id: int | None = None,
    anchor: str = "x264",
    metric: str = "psnr_y",
    limit: int = 20,
    include_code: bool = False,
    page_size: int = 50,
) -> list[RankedCandidate]:
    """Candidates ranked by their best (lowest) BD-rate against ``anchor`` on ``metric``.

    One row per candidate (its best experiment), restricted to a clip and/or a
    campaign, with the rate points that BD-rate was computed from.

    Scores are walked in BD-rate order through ``ix_scores_anchor_codec_metric_bd_rate``
    in pages (keyset on bd_rate, experiment_id); the first score seen for a
    candidate is its best, and the walk stops once ``limit`` candidates are found,
    so the cost follows ``limit``, not the table size. ``page_size`` is the number
    of score rows read per step.
    """
    if limit < 1:
        return []
    base = (
        sa.select(Score.bd_rate, Score.experiment_id, Score.bd_psnr, Experiment.candidate_id, Clip.sha256)
        .join(Experiment, Experiment.id == Score.experiment_id)
        .join(Clip, Clip.id == Experiment.clip_id)
        .where(
            Score.anchor_codec == anchor,
            Score.metric == metric,
            Score.bd_rate.is_not(None),
            Experiment.status == S.SUCCEEDED,
            Experiment.candidate_id.is_not(None),
        )
        .order_by(Score.bd_rate, Score.experiment_id)
    )
    if clip_sha256 is not None:
        clip_id = session.scalar(sa.select(Clip.id).where(Clip.sha256 == clip_sha256))
        if clip_id is None:
            return []
        base = base.where(Experiment.clip_id == clip_id)
    if campaign_id is not None:
        base = base.where(Experiment.campaign_id == campaign_id)

    best: dict[int, tuple[float, int, float | None, str]] = {}
    page_size = max(page_size, limit)
    after: tuple[float, int] | None = None
    while len(best) < limit:
        page = base
        if after is not None:
            page = page.where(sa.tuple_(Score.bd_rate, Score.experiment_id) > sa.tuple_(*after))
        rows = session.execute(page.limit(page_size)).all()
        for bd_rate, experiment_id, bd_psnr, candidate_id, sha in rows:
            if candidate_id not in best:
                best[candidate_id] = (bd_rate, experiment_id, bd_psnr, sha)
                if len(best) == limit:
                    break
        if len(rows) < page_size:
            break
        after = (rows[-1][0], rows[-1][1])

    if not best:
        return []
    points = stored_points(session, [v[1] for v in best.values()])
    columns = [Candidate.id, Candidate.ast_hash, Candidate.generator, Candidate.model]
    if include_code:
        columns.append(Candidate.code)
    info = {row[0]: row for row in session.execute(sa.select(*columns).where(Candidate.id.in_(list(best))))}
    ranked = []
    for rank, (candidate_id, (bd_rate, experiment_id, bd_psnr, sha)) in enumerate(best.items(), start=1):
        row = info[candidate_id]
        ranked.append(
            RankedCandidate(
                rank=rank,
                candidate_id=candidate_id,
                experiment_id=experiment_id,
                clip_sha256=sha,
                anchor_codec=anchor,
                metric=metric,
                bd_rate=bd_rate,
                bd_psnr=bd_psnr,
                ast_hash=row[1],
                generator=row[2],
                model=row[3],
                points=tuple(point for point, _ in points.get(experiment_id, ())),
                code=row[4] if include_code else None,
            )
        )
    return ranked


def top_k_candidates(
    session: Session,
    k: int,
    *,
    clip_sha256: str | None = None,
    campaign_id: int | None = None,
    anchor: str = "x264",
    metric: str = "psnr_y",
) -> list[RankedCandidate]:
    """The ``k`` best candidates with their code and measured numbers, for a prompt."""
    return leaderboard(
        session,
        clip_sha256=clip_sha256,
        campaign_id=campaign_id,
        anchor=anchor,
        metric=metric,
        limit=k,
        include_code=True,
    )


def recent_failures(session: Session, n: int, *, campaign_id: int | None = None) -> list[FailureSummary]:
    """The ``n`` most recent experiments that ended without a result, with stage and reason.

    One index range scan per failure status on ``ix_experiments_status_finished_at``
    (newest first, ``n`` rows each), merged: cheap however many experiments exist.
    """
    if n < 1:
        return []
    per_status = []
    for status in sorted(FAILURES):
        q = sa.select(Experiment.id, Experiment.finished_at).where(
            Experiment.status == status, Experiment.finished_at.is_not(None)
        )
        if campaign_id is not None:
            q = q.where(Experiment.campaign_id == campaign_id)
        per_status.append(q.order_by(Experiment.finished_at.desc(), Experiment.id.desc()).limit(n).subquery())
    merged = sa.union_all(*(sa.select(sq.c.id, sq.c.finished_at) for sq in per_status)).subquery()
    newest = sa.select(merged.c.id).order_by(merged.c.finished_at.desc(), merged.c.id.desc()).limit(n).subquery()
    rows = session.execute(
        sa.select(
            Experiment.id,
            Experiment.candidate_id,
            Clip.sha256,
            Experiment.status,
            Experiment.failure_stage,
            Experiment.error,
            Experiment.finished_at,
        )
        .join(newest, newest.c.id == Experiment.id)
        .join(Clip, Clip.id == Experiment.clip_id)
        .order_by(Experiment.finished_at.desc(), Experiment.id.desc())
    ).all()
    return [FailureSummary(*row) for row in rows]


__all__ = [
    "FailureSummary",
    "RankedCandidate",
    "leaderboard",
    "recent_failures",
    "top_k_candidates",
]
