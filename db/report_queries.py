"""Read-only queries behind ``codecfleet report``.

Nothing here writes or commits. Each function returns plain frozen dataclasses
(never live ORM objects; rate points as ``evaluation.results.RatePoint``), so the
report can close its session before the slow parts (figures, re-decoding) and
nothing it does can change a stored row.
Results of an experiment that reused another's are read through
``reused_from_id``, as in ``db.results.experiment_measurements``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import (
    FAILURES,
    AnchorResult,
    Campaign,
    Candidate,
    Clip,
    Experiment,
    ExperimentStatus,
    Score,
    candidate_parents,
)
from db.results import id_chunks, stored_points
from evaluation.results import RatePoint

__all__ = [
    "AnchorRow",
    "CampaignInfo",
    "CandidateInfo",
    "ClipInfo",
    "ExperimentInfo",
    "FailureGroup",
    "StoredPoints",
    "ScoreRow",
    "candidate_experiments",
    "candidates_by_id",
    "experiments_in_scope",
    "failure_breakdown",
    "find_campaign",
    "lineage_ids",
    "points_by_experiment",
    "scores_by_experiment",
    "status_counts",
    "stored_anchor_rows",
]


@dataclass(frozen=True)
class CampaignInfo:
    id: int
    name: str
    description: str | None


@dataclass(frozen=True)
class ClipInfo:
    id: int
    sha256: str
    source: str
    width: int
    height: int
    n_frames: int
    fps: float


@dataclass(frozen=True)
class CandidateInfo:
    id: int
    generator: str
    model: str | None
    code: str | None
    ast_hash: str | None
    sanitizer_verdict: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime
    #: Sorted ids from ``candidate_parents``.
    parent_ids: tuple[int, ...]


@dataclass(frozen=True)
class ExperimentInfo:
    id: int
    campaign_id: int | None
    candidate_id: int | None
    clip: ClipInfo
    status: ExperimentStatus
    failure_stage: str | None
    error: str | None
    reused_from_id: int | None
    duplicate_of_id: int | None
    config: dict[str, Any]
    rate_points: tuple[float, ...]
    anchors: tuple[str, ...]
    worker_host: str | None
    device: str | None
    isolation: str | None
    attempts: int
    queued_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class StoredPoints:
    """An experiment's stored rate points (through a reuse), in rate order, and where
    their numbers come from: the versions they were measured with (distinct, sorted)
    and, per rate index, the experiment that measured them (another one after a reuse)."""

    points: tuple[RatePoint, ...] = ()
    evaluator_versions: tuple[str, ...] = ()
    metrics_versions: tuple[str, ...] = ()
    measured_by: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreRow:
    anchor_codec: str
    metric: str
    bd_rate: float | None
    bd_psnr: float | None
    overlap: float | None
    reason: str | None
    anchor_version: str
    metrics_version: str
    #: Whether the overlap reached ``min_overlap`` (None: no figure computed), and the
    #: figure before that check (``bd_rate`` is None when it did not).
    reliable: bool | None = None
    raw_bd_rate: float | None = None
    min_overlap: float | None = None


@dataclass(frozen=True)
class AnchorRow:
    codec: str
    crf: int
    n_bytes: int
    kbps: float
    bpp: float
    psnr_rgb: float
    psnr_y: float
    ssim_y: float
    ms_ssim: float | None
    encode_seconds: float | None
    decode_seconds: float | None
    anchor_version: str
    metrics_version: str
    settings: dict[str, Any]
    settings_hash: str
    created_at: datetime


@dataclass(frozen=True)
class FailureGroup:
    """Experiments that ended in one (status, failure_stage), with a few distinct reasons."""

    status: ExperimentStatus
    failure_stage: str | None
    count: int
    #: Up to ``examples`` (experiment id, error) pairs with distinct errors, newest first.
    examples: tuple[tuple[int, str], ...]


# --- scope --------------------------------------------------------------------


def find_campaign(session: Session, ref: str | int) -> CampaignInfo | None:
    """The campaign named ``ref``, or with id ``ref`` when it is all digits and no name matches."""
    row = session.scalar(sa.select(Campaign).where(Campaign.name == str(ref)))
    if row is None and str(ref).isdigit():
        row = session.get(Campaign, int(ref))
    return None if row is None else CampaignInfo(row.id, row.name, row.description)


def _scope_filter(query: sa.Select, campaign_id: int | None, experiment_id: int | None) -> sa.Select:
    if campaign_id is not None:
        query = query.where(Experiment.campaign_id == campaign_id)
    if experiment_id is not None:
        query = query.where(Experiment.id == experiment_id)
    return query


def _clip_info(clip: Clip) -> ClipInfo:
    return ClipInfo(clip.id, clip.sha256, clip.source, clip.width, clip.height, clip.n_frames, clip.fps)


def experiments_in_scope(
    session: Session, *, campaign_id: int | None = None, experiment_id: int | None = None
) -> list[ExperimentInfo]:
    """Every experiment of a campaign, one experiment, or (neither given) all, by id."""
    return _experiment_infos(session, lambda q: _scope_filter(q, campaign_id, experiment_id))


def _experiment_infos(session: Session, where: Any) -> list[ExperimentInfo]:
    query = where(sa.select(Experiment, Clip).join(Clip, Clip.id == Experiment.clip_id)).order_by(Experiment.id)
    out = []
    for e, clip in session.execute(query):
        out.append(
            ExperimentInfo(
                id=e.id,
                campaign_id=e.campaign_id,
                candidate_id=e.candidate_id,
                clip=_clip_info(clip),
                status=ExperimentStatus(e.status),
                failure_stage=e.failure_stage,
                error=e.error,
                reused_from_id=e.reused_from_id,
                duplicate_of_id=e.duplicate_of_id,
                config=dict(e.config or {}),
                rate_points=tuple(float(q) for q in e.rate_points or ()),
                anchors=tuple(e.anchors or ()),
                worker_host=e.worker_host,
                device=e.device,
                isolation=e.isolation,
                attempts=e.attempts,
                queued_at=e.queued_at,
                finished_at=e.finished_at,
            )
        )
    return out


def status_counts(
    session: Session, *, campaign_id: int | None = None, experiment_id: int | None = None
) -> dict[ExperimentStatus, int]:
    query = _scope_filter(
        sa.select(Experiment.status, sa.func.count()).group_by(Experiment.status), campaign_id, experiment_id
    )
    return {ExperimentStatus(s): n for s, n in session.execute(query)}


# --- results ------------------------------------------------------------------


def _result_owner(experiments: Iterable[ExperimentInfo]) -> dict[int, int]:
    return {e.id: e.reused_from_id or e.id for e in experiments}


def points_by_experiment(session: Session, experiments: Sequence[ExperimentInfo]) -> dict[int, StoredPoints]:
    """Stored rate points of each experiment (through a reuse), by rate index."""
    owner = _result_owner(experiments)
    by_owner = {
        source: StoredPoints(
            points=tuple(p for p, _ in rows),
            evaluator_versions=tuple(sorted({m.evaluator_version for _, m in rows})),
            metrics_versions=tuple(sorted({m.metrics_version for _, m in rows})),
            measured_by={p.index: m.experiment_id for p, m in rows},
        )
        for source, rows in stored_points(session, owner.values()).items()
    }
    return {eid: by_owner.get(src, StoredPoints()) for eid, src in owner.items()}


def scores_by_experiment(
    session: Session, experiments: Sequence[ExperimentInfo], *, metric: str | None = None
) -> dict[int, dict[tuple[str, str], ScoreRow]]:
    """Stored scores of each experiment (through a reuse), keyed by (anchor codec, metric)."""
    owner = _result_owner(experiments)
    if not owner:
        return {}
    by_owner: dict[int, dict[tuple[str, str], ScoreRow]] = {}
    for chunk in id_chunks(owner.values()):
        query = sa.select(Score).where(Score.experiment_id.in_(chunk))
        if metric is not None:
            query = query.where(Score.metric == metric)
        for s in session.scalars(query):
            by_owner.setdefault(s.experiment_id, {})[(s.anchor_codec, s.metric)] = ScoreRow(
                s.anchor_codec, s.metric, s.bd_rate, s.bd_psnr, s.overlap, s.reason, s.anchor_version, s.metrics_version,
                s.reliable, s.raw_bd_rate, s.min_overlap,
            )
    return {eid: dict(by_owner.get(src, {})) for eid, src in owner.items()}


def _settings_key(settings: dict[str, Any]) -> str:
    # A writer may or may not keep the CRF inside ``settings``; the curve is the
    # set of rows that agree on everything else.
    rest = {k: v for k, v in (settings or {}).items() if k != "crf"}
    return json.dumps(rest, sort_keys=True, default=str)


def stored_anchor_rows(session: Session, clip_sha256: str, codec: str) -> list[AnchorRow]:
    """The stored anchor curve of ``codec`` on a clip, by rising rate.

    Rows can exist for several configurations (anchor or metrics version,
    encoder settings); one curve never mixes them. The configuration with the
    most points wins, the newest on a tie.
    """
    rows = session.scalars(
        sa.select(AnchorResult)
        .where(AnchorResult.clip_sha256 == clip_sha256, AnchorResult.codec == codec)
        .order_by(AnchorResult.id)
    ).all()
    groups: dict[tuple[str, str, str], list[AnchorResult]] = {}
    for r in rows:
        groups.setdefault((r.anchor_version, r.metrics_version, _settings_key(r.settings)), []).append(r)
    if not groups:
        return []
    chosen = max(groups.values(), key=lambda g: (len({r.crf for r in g}), max(r.created_at for r in g)))
    by_crf: dict[int, AnchorResult] = {}
    for r in chosen:
        by_crf.setdefault(r.crf, r)
    return sorted(
        (
            AnchorRow(
                codec=r.codec,
                crf=r.crf,
                n_bytes=r.n_bytes,
                kbps=r.kbps,
                bpp=r.bpp,
                psnr_rgb=r.psnr_rgb,
                psnr_y=r.psnr_y,
                ssim_y=r.ssim_y,
                ms_ssim=r.ms_ssim,
                encode_seconds=r.encode_seconds,
                decode_seconds=r.decode_seconds,
                anchor_version=r.anchor_version,
                metrics_version=r.metrics_version,
                settings=dict(r.settings or {}),
                settings_hash=r.settings_hash,
                created_at=r.created_at,
            )
            for r in by_crf.values()
        ),
        key=lambda a: (a.kbps, a.crf),
    )


# --- failures -----------------------------------------------------------------


def failure_breakdown(
    session: Session,
    *,
    campaign_id: int | None = None,
    experiment_id: int | None = None,
    examples: int = 3,
) -> list[FailureGroup]:
    """Experiments that ended without a result, counted by (status, failure_stage), largest first."""
    counts = session.execute(
        _scope_filter(
            sa.select(Experiment.status, Experiment.failure_stage, sa.func.count())
            .where(Experiment.status.in_(sorted(FAILURES)))
            .group_by(Experiment.status, Experiment.failure_stage),
            campaign_id,
            experiment_id,
        )
    ).all()
    groups = []
    for status, stage, count in counts:
        stage_match = Experiment.failure_stage.is_(None) if stage is None else Experiment.failure_stage == stage
        seen: dict[str, int] = {}
        # Newest first; read a bounded window so a group of thousands with one
        # repeated error costs one small query.
        rows = session.execute(
            _scope_filter(
                sa.select(Experiment.id, Experiment.error)
                .where(Experiment.status == status, stage_match)
                .order_by(Experiment.finished_at.desc(), Experiment.id.desc())
                .limit(max(examples, 1) * 50),
                campaign_id,
                experiment_id,
            )
        ).all()
        for eid, error in rows:
            if error is not None and error not in seen:
                seen[error] = eid
                if len(seen) >= examples:
                    break
        groups.append(
            FailureGroup(
                status=ExperimentStatus(status),
                failure_stage=stage,
                count=count,
                examples=tuple((eid, err) for err, eid in seen.items()),
            )
        )
    return sorted(groups, key=lambda g: (-g.count, g.status.value, g.failure_stage or ""))


# --- candidates and lineage ---------------------------------------------------


def candidates_by_id(session: Session, ids: Iterable[int]) -> dict[int, CandidateInfo]:
    parents: dict[int, list[int]] = {}
    rows: list[Candidate] = []
    for chunk in id_chunks(ids):
        for child, parent in session.execute(
            sa.select(candidate_parents.c.candidate_id, candidate_parents.c.parent_id).where(
                candidate_parents.c.candidate_id.in_(chunk)
            )
        ):
            parents.setdefault(child, []).append(parent)
        rows += session.scalars(sa.select(Candidate).where(Candidate.id.in_(chunk)))
    return {
        c.id: CandidateInfo(
            id=c.id,
            generator=c.generator,
            model=c.model,
            code=c.code,
            ast_hash=c.ast_hash,
            sanitizer_verdict=c.sanitizer_verdict,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            created_at=c.created_at,
            parent_ids=tuple(sorted(parents.get(c.id, ()))),
        )
        for c in rows
    }


def lineage_ids(session: Session, candidate_id: int, *, max_depth: int = 100) -> list[int]:
    """Candidate ids from ``candidate_id`` back to its root, following the first (lowest-id) parent.

    Stops at a candidate without parents, at ``max_depth`` steps, or where an
    id would repeat (a cycle the schema does not forbid across several rows).
    """
    chain = [candidate_id]
    while len(chain) <= max_depth:
        parent = session.scalar(
            sa.select(sa.func.min(candidate_parents.c.parent_id)).where(candidate_parents.c.candidate_id == chain[-1])
        )
        if parent is None or parent in chain:
            break
        chain.append(parent)
    return chain


def candidate_experiments(
    session: Session, candidate_ids: Iterable[int], *, clip_sha256: str | None = None
) -> dict[int, list[ExperimentInfo]]:
    """Succeeded experiments of each candidate (optionally on one clip), by id."""
    wanted = sorted(set(candidate_ids))
    if not wanted:
        return {}

    def where(query: sa.Select) -> sa.Select:
        query = query.where(Experiment.candidate_id.in_(wanted), Experiment.status == ExperimentStatus.SUCCEEDED)
        return query if clip_sha256 is None else query.where(Clip.sha256 == clip_sha256)

    out: dict[int, list[ExperimentInfo]] = {cid: [] for cid in wanted}
    for info in _experiment_infos(session, where):
        out[info.candidate_id].append(info)
    return out
