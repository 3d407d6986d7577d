"""Read-only queries a campaign driver needs to resume and to choose parents.

Kept beside ``db.experiments`` and ``db.results`` (which hold the writes and the state machine); every
number returned here is a stored measurement or score, never derived stand-ins.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import (
    Candidate,
    Clip,
    Experiment,
    ExperimentPoint,
    ExperimentStatus,
    Probe,
    Score,
    candidate_parents,
)
from db.results import stored_points
from evaluation.results import RatePoint


@dataclass(frozen=True)
class CampaignMember:
    """One experiment of a campaign with what a driver needs of it."""

    experiment_id: int
    candidate_id: int | None
    clip_sha256: str
    status: ExperimentStatus
    failure_stage: str | None
    error: str | None
    reused_from_id: int | None
    bd_rate: float | None  # against the asked anchor and metric; None when not measured
    bd_reason: str | None
    generator: str | None
    model: str | None
    code: str | None
    parent_ids: tuple[int, ...]
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    gpu_seconds: float  # encode + decode wall seconds of its stored measurements
    #: The stored rate points it was measured with (:func:`db.results.stored_points`).
    points: tuple[RatePoint, ...]


def campaign_members(
    session: Session, campaign_id: int, *, anchor: str = "x264", metric: str = "psnr_y"
) -> list[CampaignMember]:
    """Every experiment of the campaign in submission order (by id).

    A reused experiment (same normalised code, clip and config) reports the
    original's numbers, since that is what was measured for it.
    """
    experiments = session.execute(
        sa.select(
            Experiment.id,
            Experiment.candidate_id,
            Clip.sha256,
            Experiment.status,
            Experiment.failure_stage,
            Experiment.error,
            Experiment.reused_from_id,
            Candidate.generator,
            Candidate.model,
            Candidate.code,
            Candidate.prompt_tokens,
            Candidate.completion_tokens,
            Candidate.cost_usd,
        )
        .join(Clip, Clip.id == Experiment.clip_id)
        .outerjoin(Candidate, Candidate.id == Experiment.candidate_id)
        .where(Experiment.campaign_id == campaign_id)
        .order_by(Experiment.id)
    ).all()
    if not experiments:
        return []
    measured_of = {row.id: row.reused_from_id or row.id for row in experiments}
    source_ids = sorted(set(measured_of.values()))
    scores = {
        row.experiment_id: (row.bd_rate, row.reason)
        for row in session.execute(
            sa.select(Score.experiment_id, Score.bd_rate, Score.reason).where(
                Score.experiment_id.in_(source_ids), Score.anchor_codec == anchor, Score.metric == metric
            )
        )
    }
    points = stored_points(session, source_ids)
    # Every rate point was encoded here; a reused point (or the second of two
    # identical ones) was not decoded again, so its decode time is not counted
    # (its encode time is the stored one: the same code encoding the same frames).
    seconds = {
        experiment_id: sum(
            p.encode_seconds + (p.decode_seconds if m.reused_from_id is None and m.same_as_rate_index is None else 0.0)
            for p, m in rows
        )
        for experiment_id, rows in points.items()
    }
    candidate_ids = sorted({row.candidate_id for row in experiments if row.candidate_id is not None})
    parents: dict[int, list[int]] = {}
    if candidate_ids:
        for child, parent in session.execute(
            sa.select(candidate_parents.c.candidate_id, candidate_parents.c.parent_id)
            .where(candidate_parents.c.candidate_id.in_(candidate_ids))
            .order_by(candidate_parents.c.candidate_id, candidate_parents.c.parent_id)
        ):
            parents.setdefault(child, []).append(parent)
    members = []
    for row in experiments:
        source = measured_of[row.id]
        bd, reason = scores.get(source, (None, None))
        members.append(
            CampaignMember(
                experiment_id=row.id,
                candidate_id=row.candidate_id,
                clip_sha256=row.sha256,
                status=ExperimentStatus(row.status),
                failure_stage=row.failure_stage,
                error=row.error,
                reused_from_id=row.reused_from_id,
                bd_rate=bd,
                bd_reason=reason,
                generator=row.generator,
                model=row.model,
                code=row.code,
                parent_ids=tuple(parents.get(row.candidate_id, ())),
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cost_usd=row.cost_usd,
                # A reuse spent no GPU time of its own.
                gpu_seconds=0.0 if row.reused_from_id else seconds.get(source, 0.0),
                points=tuple(p for p, _ in points.get(source, ())),
            )
        )
    return members


def campaign_id_by_name(session: Session, name: str) -> int:
    """The id of the campaign called ``name``; LookupError naming it when there is none."""
    from db.models import Campaign

    campaign_id = session.scalar(sa.select(Campaign.id).where(Campaign.name == name))
    if campaign_id is None:
        raise LookupError(f"no campaign called {name!r}")
    return campaign_id


def stored_clip_seed(session: Session, name: str) -> int | None:
    """The secret clip seed stored for the campaign called ``name``; None when the
    campaign does not exist or has drawn none yet."""
    from db.models import Campaign

    return session.scalar(sa.select(Campaign.clip_seed).where(Campaign.name == name))


@dataclass(frozen=True)
class StoredCandidate:
    candidate_id: int
    generator: str
    model: str | None
    code: str | None
    prompt: str | None
    raw_reply: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    mode: str | None


def stored_candidate(session: Session, candidate_id: int) -> StoredCandidate:
    row = session.get(Candidate, candidate_id)
    if row is None:
        raise LookupError(f"candidate {candidate_id} does not exist")
    return StoredCandidate(
        row.id, row.generator, row.model, row.code, row.prompt, row.raw_reply, row.prompt_tokens,
        row.completion_tokens, row.mode,
    )


@dataclass(frozen=True)
class UnfinishedExperiment:
    id: int
    status: ExperimentStatus
    attempts: int
    has_candidate: bool


def campaign_unfinished(session: Session, campaign_id: int) -> list[UnfinishedExperiment]:
    """The campaign's experiments that have not ended (queued or running), oldest first."""
    from db.models import TERMINAL

    rows = session.execute(
        sa.select(Experiment.id, Experiment.status, Experiment.attempts, Experiment.candidate_id)
        .where(Experiment.campaign_id == campaign_id, Experiment.status.not_in(list(TERMINAL)))
        .order_by(Experiment.id)
    ).all()
    return [UnfinishedExperiment(r.id, ExperimentStatus(r.status), r.attempts, r.candidate_id is not None) for r in rows]


def campaign_codes(session: Session, campaign_id: int) -> list[str]:
    """The code of every candidate of the campaign (what a generator must not repeat)."""
    return list(
        session.scalars(
            sa.select(Candidate.code)
            .where(Candidate.campaign_id == campaign_id, Candidate.code.is_not(None))
            .order_by(Candidate.id)
        )
    )


@dataclass(frozen=True)
class ProbeStats:
    """What the probe did over a campaign: outcomes, seconds spent and saved."""

    probed: int
    outcomes: dict[str, int]
    seconds: float  # encode + decode wall seconds of every probe
    saved_seconds: float  # estimated full-measurement seconds spared by the stops

    @property
    def stopped(self) -> int:
        return self.probed - self.outcomes.get("passed", 0)

    @property
    def net_seconds(self) -> float:
        """Saved minus spent: what the probe gained overall (negative: it cost more)."""
        return self.saved_seconds - self.seconds


def campaign_probe_stats(session: Session, campaign_id: int) -> ProbeStats:
    rows = session.execute(
        sa.select(Probe.outcome, sa.func.count(), sa.func.sum(Probe.seconds), sa.func.sum(Probe.saved_seconds))
        .join(Experiment, Experiment.id == Probe.experiment_id)
        .where(Experiment.campaign_id == campaign_id)
        .group_by(Probe.outcome)
    ).all()
    outcomes = {outcome: int(n) for outcome, n, _, _ in rows}
    return ProbeStats(
        probed=sum(outcomes.values()),
        outcomes=outcomes,
        seconds=float(sum(s or 0.0 for _, _, s, _ in rows)),
        saved_seconds=float(sum(s or 0.0 for _, _, _, s in rows)),
    )


def campaign_reuse_stats(session: Session, campaign_id: int) -> dict[str, int]:
    """Rate points of the campaign's experiments by where their numbers came from:
    ``measured`` here, ``reused`` from another experiment (same bytes, same decoder),
    ``same_as`` an earlier rate point of the same experiment."""
    kind = sa.case(
        (ExperimentPoint.reused_from_id.is_not(None), "reused"),
        (ExperimentPoint.same_as_rate_index.is_not(None), "same_as"),
        else_="measured",
    )
    rows = session.execute(
        sa.select(kind, sa.func.count())
        .join(Experiment, Experiment.id == ExperimentPoint.experiment_id)
        .where(Experiment.campaign_id == campaign_id)
        .group_by(kind)
    ).all()
    out = {"measured": 0, "reused": 0, "same_as": 0}
    out.update({kind: int(n) for kind, n in rows})
    return out
