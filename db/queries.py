"""Every query codecfleet runs against the results database, in one place.

Tasks call these with a session they own (``db.session.session_scope``); no
function here commits. Writes that race between workers (state transitions,
recording results, re-queueing) are single conditional statements or rely on a
unique constraint, never on a read followed by a write, so two workers cannot
both win.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from db.models import (
    FAILURES,
    PSNR_CAP_DB,
    RUNNING,
    STAGE_TIMESTAMPS,
    TERMINAL,
    TRANSITIONS,
    AnchorResult,
    Artifact,
    Campaign,
    Candidate,
    Clip,
    ClipSeed,
    Experiment,
    ExperimentPoint,
    ExperimentStatus,
    InternalError,
    Measurement,
    Probe,
    Score,
    candidate_parents,
    utcnow,
)

S = ExperimentStatus

#: The pipeline stage named in ``failure_stage`` when a running status ends badly.
STAGE_OF_STATUS: dict[ExperimentStatus, str] = {
    S.QUEUED: "queue",
    S.GENERATING: "generate",
    S.SANITIZING: "sanitize",
    S.ENCODING: "encode",
    S.SCORING: "score",
}


# --- errors -----------------------------------------------------------------


class ExperimentNotFound(LookupError):
    def __init__(self, experiment_id: int) -> None:
        super().__init__(f"experiment {experiment_id} does not exist")
        self.experiment_id = experiment_id


class IllegalTransition(ValueError):
    """A status change the state machine forbids (e.g. succeeded -> encoding)."""

    def __init__(self, experiment_id: int, from_status: ExperimentStatus, to_status: ExperimentStatus) -> None:
        allowed = sorted(TRANSITIONS.get(to_status, ()))
        if to_status is ExperimentStatus.QUEUED:
            hint = " (only requeue() moves a running experiment back to queued)"
        else:
            hint = f" (only from {', '.join(s.value for s in allowed)})"
        super().__init__(
            f"experiment {experiment_id}: illegal transition {from_status.value} -> {to_status.value}{hint}"
        )
        self.experiment_id = experiment_id
        self.from_status = from_status
        self.to_status = to_status


class ResultMismatch(ValueError):
    """Results handed to ``record_result`` do not belong to the experiment."""


# --- hashing ----------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, no NaN/inf: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(config: Mapping[str, Any], rate_points: Sequence[float]) -> str:
    """sha256 of what determines an experiment's output bytes besides the code and clip.

    Computed over the canonical JSON of ``{"config": config, "rate_points": [...]}``,
    so a lookup by (code, clip, config_hash) only reuses results of the same encodes.
    """
    payload = {"config": dict(config), "rate_points": [float(q) for q in rate_points]}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def settings_hash(settings: Mapping[str, Any], *, anchor_version: str, metrics_version: str) -> str:
    """sha256 identifying a classic-anchor configuration, versions included.

    A new anchor or metrics version yields a new hash, so new numbers are stored
    beside the old ones instead of silently mixing with them.
    """
    payload = {"settings": dict(settings), "anchor_version": anchor_version, "metrics_version": metrics_version}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def decoder_hash(ast_hash: str | None, config: Mapping[str, Any]) -> str:
    """sha256 naming the decoder of a measurement: the candidate's normalised-AST hash
    and the config its ``decompress_video_frame`` is handed (quality, width, height,
    fps, device). Finer than the AST hash alone because the decoder receives that
    config: the same code told another quality (or device) is not provably the same
    function of the bytes, so it is measured anew rather than trusted to match."""
    payload = {"ast_hash": ast_hash, "config": dict(config)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def decoder_config(experiment: Experiment, quality: float) -> dict[str, Any]:
    """The system config the decoder of ``experiment`` is handed at ``quality``
    (as ``evaluation.pipeline.measure_rate_point`` builds it)."""
    clip = experiment.clip
    return {"quality": float(quality), "width": clip.width, "height": clip.height, "fps": float(clip.fps),
            "device": experiment.device}


def experiment_decoder_hash(experiment: Experiment, quality: float) -> str:
    ast_hash = experiment.candidate.ast_hash if experiment.candidate is not None else None
    return decoder_hash(ast_hash, decoder_config(experiment, quality))


def find_measurement(
    session: Session, *, sha256: str, decoder_hash: str, clip_sha256: str, metrics_version: str
) -> Measurement | None:
    """The stored measurement of the bitstream ``sha256`` by this decoder, if any."""
    return session.scalar(
        sa.select(Measurement)
        .join(Artifact, Artifact.id == Measurement.artifact_id)
        .where(
            Artifact.sha256 == sha256,
            Measurement.decoder_hash == decoder_hash,
            Measurement.clip_sha256 == clip_sha256,
            Measurement.metrics_version == metrics_version,
        )
    )


def _now(now: datetime | None) -> datetime:
    return utcnow() if now is None else now


# --- campaigns, clips, candidates -------------------------------------------


def create_campaign(session: Session, name: str, description: str | None = None) -> Campaign:
    campaign = Campaign(name=name, description=description)
    session.add(campaign)
    session.flush()
    return campaign


def get_or_create_clip(
    session: Session, *, sha256: str, source: str, width: int, height: int, n_frames: int, fps: float
) -> Clip:
    """The clip row for ``sha256``, inserted if new (safe when two workers race)."""
    existing = session.scalar(sa.select(Clip).where(Clip.sha256 == sha256))
    if existing is None:
        try:
            with session.begin_nested():
                existing = Clip(
                    sha256=sha256, source=source, width=width, height=height, n_frames=n_frames, fps=fps
                )
                session.add(existing)
        except IntegrityError:
            existing = session.scalar(sa.select(Clip).where(Clip.sha256 == sha256))
            if existing is None:
                raise
    if (existing.width, existing.height, existing.n_frames) != (width, height, n_frames):
        raise ValueError(
            f"clip {sha256[:12]}… is stored as {existing.width}x{existing.height}x{existing.n_frames}, "
            f"not {width}x{height}x{n_frames}"
        )
    return existing


def create_candidate(
    session: Session,
    *,
    generator: str,
    code: str | None = None,
    ast_hash: str | None = None,
    model: str | None = None,
    prompt: str | None = None,
    raw_reply: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cost_usd: float | None = None,
    mode: str | None = None,
    parent_ids: Iterable[int] = (),
    campaign_id: int | None = None,
) -> Candidate:
    """Store a candidate as generated (or supplied); the sanitizer verdict comes later."""
    candidate = Candidate(
        generator=generator,
        code=code,
        ast_hash=ast_hash,
        model=model,
        prompt=prompt,
        raw_reply=raw_reply,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd,
        mode=mode,
        campaign_id=campaign_id,
    )
    session.add(candidate)
    session.flush()
    parents = sorted(set(parent_ids))
    if parents:
        session.execute(
            sa.insert(candidate_parents), [{"candidate_id": candidate.id, "parent_id": p} for p in parents]
        )
        session.expire(candidate, ["parents"])
    return candidate


def record_sanitizer_verdict(
    session: Session,
    candidate_id: int,
    *,
    accepted: bool,
    reason: str | None = None,
    code: str | None = None,
    ast_hash: str | None = None,
) -> None:
    """Store the sanitizer's verdict; accepted code comes with its normalised-AST hash."""
    if not accepted and not reason:
        raise ValueError("a rejection needs a reason (the next prompt shows it)")
    values: dict[str, Any] = {"sanitizer_verdict": "accepted" if accepted else "rejected", "sanitizer_reason": reason}
    if code is not None:
        values["code"] = code
    if ast_hash is not None:
        values["ast_hash"] = ast_hash
    result = session.execute(
        sa.update(Candidate).where(Candidate.id == candidate_id).values(**values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        raise LookupError(f"candidate {candidate_id} does not exist")
    _expire(session, Candidate, candidate_id)


# --- experiments and their state machine ------------------------------------


def create_experiment(
    session: Session,
    *,
    clip_id: int,
    config: Mapping[str, Any],
    rate_points: Sequence[float],
    anchors: Sequence[str] = (),
    candidate_id: int | None = None,
    campaign_id: int | None = None,
    now: datetime | None = None,
) -> Experiment:
    """A new experiment in status ``queued`` (send its task after the commit)."""
    if not rate_points:
        raise ValueError("an experiment needs at least one rate point")
    bad = [q for q in rate_points if not (isinstance(q, int | float) and 0.0 <= q <= 1.0)]
    if bad:
        raise ValueError(f"rate points must be qualities in [0, 1], got {bad}")
    experiment = Experiment(
        clip_id=clip_id,
        config=dict(config),
        config_hash=config_hash(config, rate_points),
        rate_points=[float(q) for q in rate_points],
        anchors=list(anchors),
        candidate_id=candidate_id,
        campaign_id=campaign_id,
        status=S.QUEUED,
        queued_at=_now(now),
        waiting_since=_now(now),
        waiting_for=first_step(candidate_id),
    )
    session.add(experiment)
    session.flush()
    return experiment


def get_experiment(session: Session, experiment_id: int) -> Experiment:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise ExperimentNotFound(experiment_id)
    return experiment


def attach_candidate(session: Session, experiment_id: int, candidate_id: int) -> None:
    """Point a generated experiment at its candidate; an experiment's candidate never changes."""
    result = session.execute(
        sa.update(Experiment)
        .where(
            Experiment.id == experiment_id,
            sa.or_(Experiment.candidate_id.is_(None), Experiment.candidate_id == candidate_id),
        )
        .values(candidate_id=candidate_id),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        current = session.scalar(sa.select(Experiment.candidate_id).where(Experiment.id == experiment_id))
        if current is None:
            raise ExperimentNotFound(experiment_id)
        raise ValueError(f"experiment {experiment_id} already has candidate {current}, not {candidate_id}")
    _expire(session, Experiment, experiment_id)


def transition(
    session: Session,
    experiment_id: int,
    to: ExperimentStatus | str,
    *,
    failure_stage: str | None = None,
    error: str | None = None,
    duplicate_of_id: int | None = None,
    worker_host: str | None = None,
    device: str | None = None,
    isolation: str | None = None,
    lease_seconds: float | None = None,
    now: datetime | None = None,
) -> bool:
    """Move an experiment to ``to`` if the state machine allows it.

    One conditional ``UPDATE ... WHERE status IN (legal sources)``: of two workers
    racing, exactly one changes the row. Returns True when this call made the
    move, False when the experiment already is in ``to`` (a redelivered task, or
    the other worker won). Raises :class:`IllegalTransition` for any other
    current status, so a finished experiment is never set running again.

    Entering a status stamps its timestamp (``STAGE_TIMESTAMPS``); entering a
    running status with ``lease_seconds`` sets the lease deadline; entering a
    terminal status clears the lease. ``failed`` needs ``failure_stage`` and
    ``error``; ``rejected`` and ``timed_out`` need ``error``; ``duplicate_output``
    needs ``duplicate_of_id`` and ``error``.

    ``succeeded`` is not reachable here: only :func:`record_result` (with the
    measurements) and :func:`reuse_result` (with the original) finish an
    experiment successfully, so no experiment succeeds without numbers.
    """
    to = ExperimentStatus(to)
    if to is S.SUCCEEDED:
        raise ValueError("an experiment succeeds only through record_result() or reuse_result()")
    return _transition(
        session,
        experiment_id,
        to,
        failure_stage=failure_stage,
        error=error,
        duplicate_of_id=duplicate_of_id,
        worker_host=worker_host,
        device=device,
        isolation=isolation,
        lease_seconds=lease_seconds,
        now=now,
    )


def _transition(
    session: Session,
    experiment_id: int,
    to: ExperimentStatus,
    *,
    failure_stage: str | None = None,
    error: str | None = None,
    duplicate_of_id: int | None = None,
    worker_host: str | None = None,
    device: str | None = None,
    isolation: str | None = None,
    lease_seconds: float | None = None,
    now: datetime | None = None,
) -> bool:
    if to is S.QUEUED:
        raise IllegalTransition(experiment_id, _current_status(session, experiment_id), S.QUEUED)
    if to is S.FAILED and not (failure_stage and error):
        raise ValueError("a failed experiment needs failure_stage and error")
    if to in (S.REJECTED, S.TIMED_OUT, S.DUPLICATE_OUTPUT) and not error:
        raise ValueError(f"status {to.value} needs an error saying why")
    if (to is S.DUPLICATE_OUTPUT) != (duplicate_of_id is not None):
        raise ValueError("duplicate_of_id goes with status duplicate_output, and only with it")
    now = _now(now)
    values: dict[str, Any] = {"status": to, STAGE_TIMESTAMPS[to]: now, "waiting_since": None, "waiting_for": None}
    if to in TERMINAL:
        values["lease_expires_at"] = None
    elif lease_seconds is not None:
        values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
    optional = {
        "failure_stage": failure_stage,
        "error": error,
        "duplicate_of_id": duplicate_of_id,
        "worker_host": worker_host,
        "device": device,
        "isolation": isolation,
    }
    values.update({k: v for k, v in optional.items() if v is not None})
    result = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.in_(TRANSITIONS[to]))
        .values(**values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount == 1:
        _expire(session, Experiment, experiment_id)
        return True
    current = _current_status(session, experiment_id)
    if current is to:
        return False
    raise IllegalTransition(experiment_id, current, to)


def renew_lease(session: Session, experiment_id: int, *, lease_seconds: float, now: datetime | None = None) -> bool:
    """Extend a running experiment's lease (a heartbeat).

    False when the experiment is no longer running (cancelled, reaped, finished):
    the worker should stop working on it.
    """
    result = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.in_(RUNNING), Experiment.waiting_since.is_(None))
        .values(lease_expires_at=_now(now) + timedelta(seconds=lease_seconds)),
        execution_options={"synchronize_session": False},
    )
    _expire(session, Experiment, experiment_id)
    return result.rowcount == 1


def requeue(
    session: Session,
    experiment_id: int,
    *,
    max_attempts: int,
    now: datetime | None = None,
    only_if_lease_expired: bool = True,
) -> bool:
    """Put a running experiment whose worker was lost back to ``queued``.

    The one move back to ``queued``: it adds one to ``attempts`` and is allowed
    while the experiment is on an attempt below ``max_attempts`` (the first run
    is attempt 1) and, unless ``only_if_lease_expired=False``, only while its
    lease has expired at ``now``, so a worker that just renewed its lease keeps
    the experiment. Returns False when the budget is spent or the lease is live;
    raises :class:`IllegalTransition` when the experiment is not running.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts counts the first run, so it is at least 1")
    now = _now(now)
    conditions = [
        Experiment.id == experiment_id,
        Experiment.status.in_(RUNNING),
        Experiment.attempts + 1 < max_attempts,
    ]
    if only_if_lease_expired:
        conditions.append(Experiment.lease_expires_at < now)
    result = session.execute(
        sa.update(Experiment)
        .where(*conditions)
        .values(**_requeued(now)),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount == 1:
        _expire(session, Experiment, experiment_id)
        return True
    current = _current_status(session, experiment_id)
    if current not in RUNNING:
        raise IllegalTransition(experiment_id, current, S.QUEUED)
    return False


def _requeued(now: datetime) -> dict[str, Any]:
    """The UPDATE values that start an experiment over: one more attempt, nobody holds it,
    and it waits for its first step (:func:`first_step`, in SQL)."""
    return {
        "status": S.QUEUED,
        "attempts": Experiment.attempts + 1,
        "lease_expires_at": None,
        "worker_host": None,
        "device": None,
        "queued_at": now,
        "waiting_since": now,
        "waiting_for": sa.case((Experiment.candidate_id.is_(None), first_step(None)), else_=first_step(0)),
    }


def reap(
    session: Session, experiment_id: int, *, max_attempts: int, now: datetime | None = None
) -> ExperimentStatus | None:
    """The reaper's decision for one experiment from :func:`expired_leases`.

    Re-queues it while attempts remain, else times it out with the stage and the
    host that lost it. Returns the new status, or None when nothing was due (the
    experiment finished or its lease was renewed since it was listed).
    """
    now = _now(now)
    row = session.execute(
        sa.select(Experiment.status, Experiment.lease_expires_at, Experiment.attempts, Experiment.worker_host).where(
            Experiment.id == experiment_id
        )
    ).one_or_none()
    if row is None:
        raise ExperimentNotFound(experiment_id)
    status, lease, attempts, host = row
    if status not in RUNNING or lease is None or lease >= now:
        return None
    if attempts + 1 < max_attempts:
        return S.QUEUED if requeue(session, experiment_id, max_attempts=max_attempts, now=now) else None
    error = (
        f"lease expired at {lease.isoformat(timespec='seconds')} while {status.value} on "
        f"{host or 'an unknown worker'}; attempt {attempts + 1} of {max_attempts}, none left"
    )
    result = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == status, Experiment.lease_expires_at < now)
        .values(
            status=S.TIMED_OUT,
            finished_at=now,
            lease_expires_at=None,
            failure_stage=STAGE_OF_STATUS[status],
            error=error,
        ),
        execution_options={"synchronize_session": False},
    )
    _expire(session, Experiment, experiment_id)
    return S.TIMED_OUT if result.rowcount == 1 else None


def _current_status(session: Session, experiment_id: int) -> ExperimentStatus:
    status = session.scalar(sa.select(Experiment.status).where(Experiment.id == experiment_id))
    if status is None:
        raise ExperimentNotFound(experiment_id)
    return ExperimentStatus(status)


def _expire(session: Session, model: type[Any], primary_key: int) -> None:
    # The UPDATEs above bypass the ORM; drop any stale copy so the next access re-reads.
    obj = session.identity_map.get(identity_key(model, primary_key))
    if obj is not None:
        session.expire(obj)


# --- dedup before running ----------------------------------------------------


def find_reusable_experiment(
    session: Session,
    *,
    ast_hash: str,
    clip_sha256: str,
    config_hash: str,
    metrics_version: str | None = None,
) -> Experiment | None:
    """The finished experiment that measured the same normalised code on the same
    clip and config, if any: its result is reused instead of running anything.

    Only ``succeeded`` originals count (never a reuse of a reuse), oldest first.
    With ``metrics_version``, only one whose numbers all come from that version.
    """
    query = (
        sa.select(Experiment)
        .join(Candidate, Candidate.id == Experiment.candidate_id)
        .join(Clip, Clip.id == Experiment.clip_id)
        .where(
            Candidate.ast_hash == ast_hash,
            Clip.sha256 == clip_sha256,
            Experiment.config_hash == config_hash,
            Experiment.status == S.SUCCEEDED,
            Experiment.reused_from_id.is_(None),
        )
        .order_by(Experiment.finished_at, Experiment.id)
        .limit(1)
    )
    if metrics_version is not None:
        other_version = (
            sa.select(Measurement.id)
            .join(ExperimentPoint, ExperimentPoint.measurement_id == Measurement.id)
            .where(ExperimentPoint.experiment_id == Experiment.id, Measurement.metrics_version != metrics_version)
        )
        query = query.where(~other_version.exists())
    return session.scalar(query)


def reuse_result(session: Session, experiment_id: int, original_id: int, *, now: datetime | None = None) -> bool:
    """Finish a ``sanitizing`` experiment with the result of ``original_id``.

    The experiment becomes ``succeeded`` with ``reused_from_id`` set; no numbers are
    copied (they stay attached to the original's artifacts). True when this call
    made the move, False when it was already done.
    """
    original = session.execute(
        sa.select(Experiment.status, Experiment.reused_from_id).where(Experiment.id == original_id)
    ).one_or_none()
    if original is None:
        raise ExperimentNotFound(original_id)
    if original.status is not S.SUCCEEDED or original.reused_from_id is not None:
        raise ValueError(f"experiment {original_id} is not an original succeeded result; nothing to reuse")
    now = _now(now)
    result = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == S.SANITIZING)
        .values(
            status=S.SUCCEEDED, reused_from_id=original_id, finished_at=now, lease_expires_at=None,
            waiting_since=None, waiting_for=None,
        ),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount == 1:
        _expire(session, Experiment, experiment_id)
        return True
    current = session.execute(
        sa.select(Experiment.status, Experiment.reused_from_id).where(Experiment.id == experiment_id)
    ).one_or_none()
    if current is None:
        raise ExperimentNotFound(experiment_id)
    if current.status is S.SUCCEEDED and current.reused_from_id == original_id:
        return False
    raise IllegalTransition(experiment_id, current.status, S.SUCCEEDED)


# --- recording results ------------------------------------------------------


@dataclass(frozen=True)
class RatePointResult:
    """One encoded, decoded and scored rate point, ready to store.

    ``path``, ``n_bytes`` and ``sha256`` describe the bitstream file as re-read
    from disk; every number was computed from that file's decoded frames.
    ``peak_rss_bytes``, ``encode_fps``, ``decode_fps``, ``ms_ssim`` are None when
    not measured.
    """

    rate_index: int
    quality: float
    path: str
    n_bytes: int
    sha256: str
    n_frames: int
    bits: int
    kbps: float
    bpp: float
    psnr_rgb: float
    psnr_y: float
    psnr_rgb_pooled: float
    psnr_y_pooled: float
    ssim_y: float
    encode_seconds: float
    decode_seconds: float
    evaluator_version: str
    metrics_version: str
    clip_sha256: str
    ms_ssim: float | None = None
    ms_ssim_scales: int | None = None
    psnr_capped_frames: int = 0
    encode_fps: float | None = None
    decode_fps: float | None = None
    peak_rss_bytes: int | None = None
    frame_psnr_y: tuple[float, ...] | None = None
    frame_bytes: tuple[int, ...] | None = None
    psnr_y420: float | None = None
    psnr_u: float | None = None
    psnr_v: float | None = None
    psnr_yuv: float | None = None
    psnr_yuv_pooled: float | None = None
    verify_decode_seconds: float | None = None
    #: False when the numbers were copied from a stored measurement (the worker found
    #: this bitstream already decoded by this decoder and did not decode it again):
    #: they are then never stored as a new measurement.
    measured: bool = True


@dataclass(frozen=True)
class ScoreResult:
    """BD numbers against one anchor; None plus ``reason`` when not computable."""

    anchor_codec: str
    metric: str
    bd_rate: float | None
    bd_psnr: float | None
    anchor_version: str
    metrics_version: str
    overlap: float | None = None
    reason: str | None = None
    reliable: bool | None = None
    min_overlap: float | None = None
    raw_bd_rate: float | None = None


@dataclass(frozen=True)
class RecordOutcome:
    experiment_id: int
    status: ExperimentStatus
    measurement_ids: tuple[int, ...] = ()
    duplicate_of_id: int | None = None
    reason: str | None = None


_MEASUREMENT_FIELDS = tuple(
    f.name for f in fields(RatePointResult) if f.name not in ("path", "sha256", "measured", "frame_psnr_y", "frame_bytes")
)

#: Distinct curve points BD-rate needs (``evaluation.rd.MIN_POINTS``; db imports nothing of evaluation).
BD_MIN_POINTS = 4


class _Retry(Exception):
    """A concurrent transaction stored one of our bitstreams or measurements first."""


def record_result(
    session: Session,
    experiment_id: int,
    points: Sequence[RatePointResult],
    scores: Sequence[ScoreResult] = (),
    *,
    now: datetime | None = None,
) -> RecordOutcome:
    """Store an experiment's rate points, measurements and scores, all or nothing.

    The experiment must be ``scoring`` and ``points`` must cover each of its rate
    points once. A bitstream is stored once (unique sha256); a measurement belongs
    to (bitstream, decoder) (:func:`decoder_hash`). Per rate point:

    - bytes already decoded by this decoder (on this clip, metrics version): the
      stored measurement is reused, and the point says so (``reused_from_id``);
    - bytes equal to an earlier rate point of this experiment: one curve point,
      linked to the same measurement (``same_as_rate_index``);
    - otherwise the numbers are stored as a new measurement (the bitstream row too,
      unless another experiment stored the same bytes first).

    Outcomes:

    - ``succeeded``: every rate point linked, the scores stored;
    - ``duplicate_output``: *every* rate point reused another experiment's
      measurement, so nothing new was measured; the points are stored (they say
      where each number comes from), the scores are not, and the experiment points
      at the one that measured its first rate point;
    - ``failed`` (stage ``verify``): rate points with byte-identical bitstreams
      leave fewer distinct curve points than BD-rate needs (:data:`BD_MIN_POINTS`):
      the encoder ignores the quality setting.

    Calling it again for an experiment already recorded returns the stored outcome.
    The caller commits.
    """
    now = _now(now)
    # FOR UPDATE (Postgres) serialises a redelivered task with the first delivery
    # of the same experiment; SQLite already holds its write lock (BEGIN IMMEDIATE).
    experiment = session.scalar(
        sa.select(Experiment)
        .where(Experiment.id == experiment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if experiment is None:
        raise ExperimentNotFound(experiment_id)
    if experiment.status in (S.SUCCEEDED, S.DUPLICATE_OUTPUT, S.FAILED) and _same_outputs(session, experiment, points):
        return _stored_outcome(session, experiment)
    if experiment.status is not S.SCORING:
        raise IllegalTransition(experiment_id, experiment.status, S.SUCCEEDED)
    _check_points(experiment, points)

    by_hash: dict[str, list[RatePointResult]] = {}
    for point in sorted(points, key=lambda p: p.rate_index):
        by_hash.setdefault(point.sha256, []).append(point)
    repeated = [group for group in by_hash.values() if len(group) > 1]
    if repeated and len(by_hash) < BD_MIN_POINTS:
        described = "; ".join(
            f"rate points {', '.join(str(p.rate_index) for p in group)} (qualities "
            f"{', '.join(f'{p.quality:g}' for p in group)}) produced byte-identical bitstreams "
            f"(sha256 {group[0].sha256[:12]}…)"
            for group in repeated
        )
        reason = (
            f"{described}: the encoder ignores the quality setting, and the {len(by_hash)} distinct points "
            f"left are fewer than the {BD_MIN_POINTS} BD-rate needs"
        )
        transition(session, experiment_id, S.FAILED, failure_stage="verify", error=reason, now=now)
        return RecordOutcome(experiment_id, S.FAILED, reason=reason)

    # Why insert-and-catch instead of trusting a lookup: two workers can finish
    # experiments with the same output at the same moment. A SELECT before the
    # INSERT would see nothing in both transactions and both would store a
    # measurement. The unique constraints (artifacts.sha256; measurements on
    # artifact and decoder) are the only arbiters that see uncommitted work: on
    # Postgres the second INSERT waits on the first transaction's index entry,
    # then fails with a unique violation once it commits; on SQLite writers are
    # serialised by BEGIN IMMEDIATE. So everything of this result is written in a
    # SAVEPOINT; on a violation only that unit is rolled back and the whole is
    # tried again, and the new statements (READ COMMITTED) now see the committed
    # rows and reuse them. Bitstreams are handled in sha256 order so two results
    # sharing several hashes wait on each other in one order and cannot deadlock.
    for _ in range(5):
        savepoint = session.begin_nested()
        try:
            links = _store_points(session, experiment, by_hash, now)
            duplicate = all(link.reused_from_id is not None for link in links)
            if not duplicate:
                session.add_all(
                    Score(
                        experiment_id=experiment_id,
                        anchor_codec=sc.anchor_codec,
                        metric=sc.metric,
                        bd_rate=sc.bd_rate,
                        bd_psnr=sc.bd_psnr,
                        overlap=sc.overlap,
                        reliable=sc.reliable,
                        min_overlap=sc.min_overlap,
                        raw_bd_rate=sc.raw_bd_rate,
                        reason=sc.reason,
                        anchor_version=sc.anchor_version,
                        metrics_version=sc.metrics_version,
                        created_at=now,
                    )
                    for sc in scores
                )
            session.flush()
        except _Retry:
            savepoint.rollback()
            continue
        except BaseException:
            savepoint.rollback()
            raise
        savepoint.commit()
        break
    else:
        raise RuntimeError(f"experiment {experiment_id}: could not record its result after 5 tries")

    links.sort(key=lambda link: link.rate_index)
    ids = tuple(link.measurement_id for link in links)
    if duplicate:
        first = links[0]
        source = session.get(Measurement, first.measurement_id)
        reason = (
            f"every rate point's bitstream was already decoded by this decoder: rate point 0 "
            f"(sha256 {_sha_at(by_hash, 0)[:12]}…) by experiment {first.reused_from_id} "
            f"(rate point {source.rate_index})"
            + (f", and {len(links) - 1} more" if len(links) > 1 else "")
            + "; an identical output is not measured twice"
        )
        transition(session, experiment_id, S.DUPLICATE_OUTPUT, failure_stage="score", error=reason,
                   duplicate_of_id=first.reused_from_id, now=now)
        return RecordOutcome(experiment_id, S.DUPLICATE_OUTPUT, measurement_ids=ids,
                             duplicate_of_id=first.reused_from_id, reason=reason)
    _transition(session, experiment_id, S.SUCCEEDED, now=now)
    return RecordOutcome(experiment_id, S.SUCCEEDED, measurement_ids=ids)


def _sha_at(by_hash: Mapping[str, Sequence[RatePointResult]], rate_index: int) -> str:
    return next(sha for sha, group in by_hash.items() if any(p.rate_index == rate_index for p in group))


def _insert(session: Session, row: Any) -> None:
    """Add and flush ``row``; a unique violation means a concurrent result stored it first."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        if "unique" in str(exc.orig).lower() or "duplicate key" in str(exc.orig).lower():
            raise _Retry() from exc
        raise


def _store_points(
    session: Session, experiment: Experiment, by_hash: Mapping[str, Sequence[RatePointResult]], now: datetime
) -> list[ExperimentPoint]:
    clip_sha = experiment.clip.sha256
    links: list[ExperimentPoint] = []
    for sha in sorted(by_hash):
        group = by_hash[sha]
        first = group[0]
        artifact = session.scalar(sa.select(Artifact).where(Artifact.sha256 == sha))
        if artifact is None:
            artifact = Artifact(experiment_id=experiment.id, kind="bitstream", rate_index=first.rate_index,
                                path=first.path, n_bytes=first.n_bytes, sha256=sha, created_at=now)
            _insert(session, artifact)
        elif artifact.n_bytes != first.n_bytes:
            raise ResultMismatch(f"bitstream {sha[:12]}… has {artifact.n_bytes} bytes stored, {first.n_bytes} here")
        dh = experiment_decoder_hash(experiment, first.quality)
        measurement = session.scalar(
            sa.select(Measurement).where(
                Measurement.artifact_id == artifact.id,
                Measurement.decoder_hash == dh,
                Measurement.clip_sha256 == clip_sha,
                Measurement.metrics_version == first.metrics_version,
            )
        )
        if measurement is None:
            if not first.measured:
                raise ResultMismatch(
                    f"rate point {first.rate_index} reuses a measurement of {sha[:12]}… that is not stored"
                )
            measurement = Measurement(
                artifact_id=artifact.id, decoder_hash=dh, experiment_id=experiment.id, created_at=now,
                frame_psnr_y=list(first.frame_psnr_y) if first.frame_psnr_y is not None else None,
                frame_bytes=list(first.frame_bytes) if first.frame_bytes is not None else None,
                **{f: getattr(first, f) for f in _MEASUREMENT_FIELDS},
            )
            _insert(session, measurement)
        reused_from = measurement.experiment_id if measurement.experiment_id != experiment.id else None
        for p in group:
            link = ExperimentPoint(
                experiment_id=experiment.id, rate_index=p.rate_index, quality=p.quality, artifact_id=artifact.id,
                measurement_id=measurement.id, reused_from_id=reused_from,
                same_as_rate_index=None if p is first else first.rate_index, path=p.path, created_at=now,
            )
            session.add(link)
            links.append(link)
    session.flush()
    return links


def _check_points(experiment: Experiment, points: Sequence[RatePointResult]) -> None:
    expected = list(range(len(experiment.rate_points)))
    got = sorted(p.rate_index for p in points)
    if got != expected:
        raise ResultMismatch(
            f"experiment {experiment.id} has rate points {expected}, results cover {got}: "
            "every rate point is measured once or the experiment fails"
        )
    for p in points:
        want = experiment.rate_points[p.rate_index]
        if not math.isclose(p.quality, want, rel_tol=0, abs_tol=1e-9):
            raise ResultMismatch(f"rate point {p.rate_index} has quality {want}, result says {p.quality}")
        if p.clip_sha256 != experiment.clip.sha256:
            raise ResultMismatch(
                f"rate point {p.rate_index} was measured on clip {p.clip_sha256[:12]}…, "
                f"experiment {experiment.id} is on clip {experiment.clip.sha256[:12]}…"
            )


def _same_outputs(session: Session, experiment: Experiment, points: Sequence[RatePointResult]) -> bool:
    """Whether ``points`` are the result already recorded for ``experiment`` (a redelivery)."""
    if experiment.status in (S.SUCCEEDED, S.DUPLICATE_OUTPUT):
        stored = set(
            session.scalars(
                sa.select(Artifact.sha256)
                .join(ExperimentPoint, ExperimentPoint.artifact_id == Artifact.id)
                .where(ExperimentPoint.experiment_id == experiment.id)
            )
        )
        if stored:
            return stored == {p.sha256 for p in points}
        # A duplicate recorded before points were kept stored none.
        return experiment.status is S.DUPLICATE_OUTPUT
    # A verify failure stored nothing: a redelivery finds it done.
    return experiment.failure_stage == "verify"


def _stored_outcome(session: Session, experiment: Experiment) -> RecordOutcome:
    ids = session.scalars(
        sa.select(ExperimentPoint.measurement_id)
        .where(ExperimentPoint.experiment_id == experiment.id)
        .order_by(ExperimentPoint.rate_index)
    ).all()
    return RecordOutcome(
        experiment.id,
        experiment.status,
        measurement_ids=tuple(ids),
        duplicate_of_id=experiment.duplicate_of_id,
        reason=experiment.error,
    )


class PointMeasurement:
    """A measurement as seen from one rate point of one experiment: the stored
    numbers, with that experiment's ``rate_index`` and ``quality``, and where the
    numbers come from (``reused_from_id``, ``same_as_rate_index``)."""

    __slots__ = ("_m", "artifact", "path", "quality", "rate_index", "reused_from_id", "same_as_rate_index")

    def __init__(self, point: ExperimentPoint, measurement: Measurement, artifact: Artifact) -> None:
        self._m = measurement
        self.rate_index = point.rate_index
        self.quality = point.quality
        self.reused_from_id = point.reused_from_id
        self.same_as_rate_index = point.same_as_rate_index
        self.path = point.path or artifact.path
        self.artifact = artifact

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)


def experiment_measurements(session: Session, experiment_id: int) -> list[PointMeasurement]:
    """The measurements behind an experiment's rate points, in rate order, following a
    whole-result reuse to its original; each says where its numbers come from."""
    experiment = get_experiment(session, experiment_id)
    source_id = experiment.reused_from_id or experiment_id
    rows = session.execute(
        sa.select(ExperimentPoint, Measurement, Artifact)
        .join(Measurement, Measurement.id == ExperimentPoint.measurement_id)
        .join(Artifact, Artifact.id == ExperimentPoint.artifact_id)
        .where(ExperimentPoint.experiment_id == source_id)
        .order_by(ExperimentPoint.rate_index)
    ).all()
    return [PointMeasurement(p, m, a) for p, m, a in rows]


# --- the probe ----------------------------------------------------------------


def record_probe(
    session: Session,
    experiment_id: int,
    *,
    holder: str,
    outcome: str,
    reason: str | None,
    quality: float,
    n_frames: int,
    seconds: float,
    saved_seconds: float = 0.0,
    payload_bytes: int | None = None,
    psnr_y: float | None = None,
    parent_experiment_id: int | None = None,
    parent_psnr_y: float | None = None,
    margin_db: float | None = None,
    now: datetime | None = None,
) -> bool:
    """Store the probe of an experiment that ``holder`` still holds (``encoding``);
    a later attempt's probe replaces an earlier one. False when not held (nothing stored)."""
    held = session.scalar(
        sa.select(Experiment.id).where(
            Experiment.id == experiment_id, Experiment.status == S.ENCODING, Experiment.worker_host == holder
        )
    )
    if held is None:
        return False
    values = dict(
        outcome=outcome, reason=reason[:4000] if reason else None, quality=float(quality), n_frames=n_frames,
        payload_bytes=payload_bytes, psnr_y=None if psnr_y is None else min(float(psnr_y), PSNR_CAP_DB),
        parent_experiment_id=parent_experiment_id,
        parent_psnr_y=None if parent_psnr_y is None else min(float(parent_psnr_y), PSNR_CAP_DB),
        margin_db=margin_db, seconds=max(0.0, float(seconds)), saved_seconds=max(0.0, float(saved_seconds)),
        created_at=_now(now),
    )
    existing = session.scalar(sa.select(Probe).where(Probe.experiment_id == experiment_id))
    if existing is None:
        session.add(Probe(experiment_id=experiment_id, **values))
    else:
        for key, value in values.items():
            setattr(existing, key, value)
    session.flush()
    return True



def parent_head_points(
    session: Session, candidate_id: int, *, clip_sha256: str, metrics_version: str, n_frames: int
) -> list[tuple[int, list[tuple[int, float]]]]:
    """For each parent of ``candidate_id`` measured on this clip (its latest succeeded
    experiment, through a reuse), its (payload bytes, mean PSNR-Y) of the first
    ``n_frames`` frames at each of its measured rate points: what a probe of the child
    is compared with (``evaluation.pipeline.compare_with_parent``). Parents without
    stored per-frame numbers (measured before they were kept), or measured with
    another metrics version, are left out."""
    parent_ids = session.scalars(
        sa.select(candidate_parents.c.parent_id).where(candidate_parents.c.candidate_id == candidate_id)
    ).all()
    out = []
    for parent_id in sorted(parent_ids):
        row = session.execute(
            sa.select(Experiment.id, Experiment.reused_from_id)
            .join(Clip, Clip.id == Experiment.clip_id)
            .where(Experiment.candidate_id == parent_id, Clip.sha256 == clip_sha256, Experiment.status == S.SUCCEEDED)
            .order_by(Experiment.finished_at.desc(), Experiment.id.desc())
            .limit(1)
        ).one_or_none()
        if row is None:
            continue
        source = row.reused_from_id or row.id
        measurements = session.execute(
            sa.select(Measurement.id, Measurement.frame_bytes, Measurement.frame_psnr_y, Measurement.metrics_version)
            .join(ExperimentPoint, ExperimentPoint.measurement_id == Measurement.id)
            .where(ExperimentPoint.experiment_id == source)
        ).all()
        points: dict[int, tuple[int, float]] = {}
        for mid, frame_bytes, frame_psnr, version in measurements:
            if (version != metrics_version or not frame_bytes or not frame_psnr
                    or len(frame_bytes) < n_frames or len(frame_psnr) < n_frames):
                points = {}
                break
            points[mid] = (int(sum(frame_bytes[:n_frames])), float(sum(frame_psnr[:n_frames]) / n_frames))
        if points:
            out.append((source, sorted(points.values())))
    return out


# --- classic anchors --------------------------------------------------------


def record_anchor_result(
    session: Session,
    *,
    clip_sha256: str,
    codec: str,
    crf: int,
    settings: Mapping[str, Any],
    n_bytes: int,
    kbps: float,
    bpp: float,
    psnr_rgb: float,
    psnr_y: float,
    ssim_y: float,
    anchor_version: str,
    metrics_version: str,
    ms_ssim: float | None = None,
    encode_seconds: float | None = None,
    decode_seconds: float | None = None,
    psnr_y420: float | None = None,
    psnr_u: float | None = None,
    psnr_v: float | None = None,
    psnr_yuv: float | None = None,
) -> AnchorResult:
    """Store one anchor point; if that (clip, codec, crf, settings) exists, return the stored row."""
    key_hash = settings_hash(settings, anchor_version=anchor_version, metrics_version=metrics_version)
    key = (
        AnchorResult.clip_sha256 == clip_sha256,
        AnchorResult.codec == codec,
        AnchorResult.crf == crf,
        AnchorResult.settings_hash == key_hash,
    )
    existing = session.scalar(sa.select(AnchorResult).where(*key))
    if existing is not None:
        return existing
    row = AnchorResult(
        clip_sha256=clip_sha256,
        codec=codec,
        crf=crf,
        settings=dict(settings),
        settings_hash=key_hash,
        n_bytes=n_bytes,
        kbps=kbps,
        bpp=bpp,
        psnr_rgb=psnr_rgb,
        psnr_y=psnr_y,
        ssim_y=ssim_y,
        ms_ssim=ms_ssim,
        psnr_y420=psnr_y420,
        psnr_u=psnr_u,
        psnr_v=psnr_v,
        psnr_yuv=psnr_yuv,
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        anchor_version=anchor_version,
        metrics_version=metrics_version,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = session.scalar(sa.select(AnchorResult).where(*key))
        if existing is None:
            raise
        return existing
    return row


def anchor_results(
    session: Session,
    clip_sha256: str,
    codec: str,
    *,
    settings: Mapping[str, Any],
    anchor_version: str,
    metrics_version: str,
) -> list[AnchorResult]:
    """The stored curve of one anchor configuration on one clip, by CRF."""
    key_hash = settings_hash(settings, anchor_version=anchor_version, metrics_version=metrics_version)
    return list(
        session.scalars(
            sa.select(AnchorResult)
            .where(
                AnchorResult.clip_sha256 == clip_sha256,
                AnchorResult.codec == codec,
                AnchorResult.settings_hash == key_hash,
            )
            .order_by(AnchorResult.crf)
        )
    )


# --- reading results: leaderboard, prompts, reaper ----------------------------


@dataclass(frozen=True)
class RatePointSummary:
    rate_index: int
    quality: float
    kbps: float
    bpp: float
    psnr_y: float
    psnr_rgb: float
    ssim_y: float
    ms_ssim: float | None
    encode_fps: float | None
    decode_fps: float | None


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
    points: tuple[RatePointSummary, ...]
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


@dataclass(frozen=True)
class ExpiredLease:
    experiment_id: int
    status: ExperimentStatus
    worker_host: str | None
    lease_expires_at: datetime
    attempts: int


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
    points = _rate_point_summaries(session, [v[1] for v in best.values()])
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
                points=points.get(experiment_id, ()),
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


def _rate_point_summaries(session: Session, experiment_ids: Sequence[int]) -> dict[int, tuple[RatePointSummary, ...]]:
    rows = session.execute(
        sa.select(
            ExperimentPoint.experiment_id,
            ExperimentPoint.rate_index,
            ExperimentPoint.quality,
            Measurement.kbps,
            Measurement.bpp,
            Measurement.psnr_y,
            Measurement.psnr_rgb,
            Measurement.ssim_y,
            Measurement.ms_ssim,
            Measurement.encode_fps,
            Measurement.decode_fps,
        )
        .join(Measurement, Measurement.id == ExperimentPoint.measurement_id)
        .where(ExperimentPoint.experiment_id.in_(list(experiment_ids)))
        .order_by(ExperimentPoint.experiment_id, ExperimentPoint.rate_index)
    ).all()
    out: dict[int, list[RatePointSummary]] = {}
    for experiment_id, *values in rows:
        out.setdefault(experiment_id, []).append(RatePointSummary(*values))
    return {k: tuple(v) for k, v in out.items()}


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


def expired_leases(session: Session, now: datetime | None = None, *, limit: int = 1000) -> list[ExpiredLease]:
    """Running experiments whose lease deadline has passed, oldest deadline first (for the reaper)."""
    rows = session.execute(
        sa.select(
            Experiment.id, Experiment.status, Experiment.worker_host, Experiment.lease_expires_at, Experiment.attempts
        )
        .where(Experiment.status.in_(RUNNING), Experiment.lease_expires_at < _now(now))
        .order_by(Experiment.lease_expires_at, Experiment.id)
        .limit(limit)
    ).all()
    return [ExpiredLease(*row) for row in rows]


# --- the fleet: holders, take-over, cancel, campaigns -------------------------


def get_or_create_campaign(session: Session, name: str) -> Campaign:
    """The campaign called ``name``, inserted if new (safe when two submitters race)."""
    existing = session.scalar(sa.select(Campaign).where(Campaign.name == name))
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            existing = Campaign(name=name)
            session.add(existing)
    except IntegrityError:
        existing = session.scalar(sa.select(Campaign).where(Campaign.name == name))
        if existing is None:
            raise
    return existing


def campaign_clip_seed(session: Session, campaign_id: int, draw: Callable[[], int]) -> int:
    """The campaign's secret clip seed; ``draw()`` is stored as it the first time
    (the first writer wins when two race, and both get the stored one)."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise LookupError(f"no campaign with id {campaign_id}")
    if campaign.clip_seed is None:
        session.execute(
            sa.update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.clip_seed.is_(None))
            .values(clip_seed=int(draw()))
            .execution_options(synchronize_session=False)
        )
        session.refresh(campaign, ["clip_seed"])
    return int(campaign.clip_seed)


def scoped_clip_seed(session: Session, scope: str, draw: Callable[[], int]) -> int:
    """The database's secret clip seed for ``scope`` (e.g. ``"default"``), drawn once
    with ``draw()`` and stored (safe when two submitters race)."""
    existing = session.get(ClipSeed, scope)
    if existing is None:
        try:
            with session.begin_nested():
                session.add(ClipSeed(scope=scope, seed=int(draw())))
        except IntegrityError:
            pass
        existing = session.scalar(sa.select(ClipSeed).where(ClipSeed.scope == scope))
    return int(existing.seed)


def take_over(
    session: Session,
    experiment_id: int,
    *,
    status: ExperimentStatus | str,
    holder: str | None,
    new_holder: str,
    lease_seconds: float,
    require_expired_lease: bool,
    now: datetime | None = None,
) -> bool:
    """Hand a running experiment from ``holder`` to ``new_holder`` and renew its lease.

    For a redelivered task that finds its stage already claimed: one
    conditional UPDATE on (status, holder[, lease expired]), so of two workers
    taking over the same dead holder's work exactly one wins. With
    ``require_expired_lease=False`` the caller has established by other means
    that the holder is gone (the same worker after a restart). True when this
    call took it over.
    """
    status = ExperimentStatus(status)
    if status not in RUNNING:
        raise ValueError(f"only a running experiment can be taken over, not {status.value}")
    now = _now(now)
    holder_matches = Experiment.worker_host.is_(None) if holder is None else Experiment.worker_host == holder
    conditions = [Experiment.id == experiment_id, Experiment.status == status, holder_matches]
    if require_expired_lease:
        conditions.append(sa.or_(Experiment.lease_expires_at.is_(None), Experiment.lease_expires_at < now))
    result = session.execute(
        sa.update(Experiment)
        .where(*conditions)
        .values(
            worker_host=new_holder,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            waiting_since=None,
            waiting_for=None,
        ),
        execution_options={"synchronize_session": False},
    )
    _expire(session, Experiment, experiment_id)
    return result.rowcount == 1


def cancel_experiment(session: Session, experiment_id: int, *, reason: str, now: datetime | None = None) -> bool:
    """Mark a queued or running experiment ``cancelled``; True when this call did it.

    An experiment that already ended (succeeded, failed, cancelled...) is left
    as it is and False is returned.
    """
    try:
        return _transition(session, experiment_id, S.CANCELLED, error=reason, now=now)
    except IllegalTransition:
        return False


# --- waiting is not running: claims and hand-offs ------------------------------
#
# A worker *holds* an experiment while it works on it: ``worker_host`` and a
# lease its heartbeat renews. Between two steps nobody holds it: the step that
# finished *hands it off* (lease and holder cleared, ``waiting_since`` and
# ``waiting_for`` set) in the same transaction that records its work, and the
# next step *claims* it when a worker takes the message. The reaper only looks
# at leases, so time spent in a queue never counts against an attempt; a lost
# hand-off message is found by :func:`waiting_experiments` and sent again.

#: The step whose message an experiment in each status waits for, when nobody holds it.
WAITING_FOR: dict[ExperimentStatus, str] = {
    S.GENERATING: "sanitize",   # generated; sanitize is next
    S.SANITIZING: "encode_decode",
    S.SCORING: "score",        # on the private queue of the node that decoded
}


def first_step(candidate_id: int | None) -> str:
    """The first step of a (re-)queued experiment: generate unless its code is there."""
    return "generate" if candidate_id is None else "sanitize"


def claim(
    session: Session,
    experiment_id: int,
    *,
    step: str,
    to: ExperimentStatus,
    holder: str,
    lease_seconds: float,
    node: str | None = None,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    """Take a *waiting* experiment whose next step is ``step``: it becomes ``to``, held
    by ``holder`` with a fresh lease. One conditional UPDATE on (waiting_for, status):
    of two deliveries of one message exactly one wins; True when this call did.

    ``node``: the experiment must also wait on that node (``score``, which runs where
    the frames were decoded).
    """
    to = ExperimentStatus(to)
    now = _now(now)
    sources = {src for src in (S.QUEUED, *WAITING_FOR) if src is to or src in TRANSITIONS.get(to, ())}
    conditions = [
        Experiment.id == experiment_id,
        Experiment.status.in_(sources),
        Experiment.waiting_since.is_not(None),
        Experiment.waiting_for == step,
    ]
    if node is not None:
        conditions.append(Experiment.worker_host == node)
    result = session.execute(
        sa.update(Experiment)
        .where(*conditions)
        .values(
            status=to,
            worker_host=holder,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            waiting_since=None,
            waiting_for=None,
            **{STAGE_TIMESTAMPS[to]: now},
            **{k: v for k, v in values.items() if v is not None},
        ),
        execution_options={"synchronize_session": False},
    )
    _expire(session, Experiment, experiment_id)
    return result.rowcount == 1


def hand_off(
    session: Session,
    experiment_id: int,
    *,
    status: ExperimentStatus,
    holder: str,
    step: str,
    to: ExperimentStatus | None = None,
    keep_node: str | None = None,
    now: datetime | None = None,
) -> bool:
    """The step that holds the experiment in ``status`` is done; it now waits for ``step``.

    Clears the lease (waiting is not running), releases the holder (or keeps
    ``keep_node`` when the next step must run on that node), optionally moves it
    to ``to``. False when ``holder`` no longer holds it (cancelled, reaped, taken
    over): then nothing changes and the caller sends nothing.
    """
    status = ExperimentStatus(status)
    now = _now(now)
    values: dict[str, Any] = {
        "worker_host": keep_node,
        "lease_expires_at": None,
        "waiting_since": now,
        "waiting_for": step,
    }
    if to is not None and ExperimentStatus(to) is not status:
        to = ExperimentStatus(to)
        if status not in TRANSITIONS[to]:
            raise IllegalTransition(experiment_id, status, to)
        values["status"] = to
    result = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == status, Experiment.worker_host == holder)
        .values(**values),
        execution_options={"synchronize_session": False},
    )
    _expire(session, Experiment, experiment_id)
    return result.rowcount == 1


@dataclass(frozen=True)
class WaitingExperiment:
    experiment_id: int
    status: ExperimentStatus
    waiting_for: str
    waiting_since: datetime
    attempts: int
    #: The node a ``score`` waits on, else None.
    node: str | None


def waiting_experiments(
    session: Session, *, older_than_seconds: float = 0.0, now: datetime | None = None, limit: int = 1000
) -> list[WaitingExperiment]:
    """Experiments waiting in a queue for longer than ``older_than_seconds``, longest first."""
    cutoff = _now(now) - timedelta(seconds=older_than_seconds)
    rows = session.execute(
        sa.select(
            Experiment.id, Experiment.status, Experiment.waiting_for, Experiment.waiting_since,
            Experiment.attempts, Experiment.worker_host,
        )
        .where(Experiment.waiting_since.is_not(None), Experiment.waiting_since <= cutoff,
               Experiment.status.not_in(TERMINAL))
        .order_by(Experiment.waiting_since, Experiment.id)
        .limit(limit)
    ).all()
    return [WaitingExperiment(r[0], ExperimentStatus(r[1]), r[2], r[3], r[4], r[5]) for r in rows]


def requeue_from_anywhere(
    session: Session,
    experiment_id: int,
    *,
    max_attempts: int,
    holder: str | None,
    stage: str,
    reason: str,
    now: datetime | None = None,
) -> str:
    """Start a non-terminal experiment over (spending one attempt), or fail it when
    its budget is spent. Used where no lease can speak for the experiment: an
    internal error in a step, or a waiting ``score`` whose node is gone.

    Only when nobody else holds it: it is waiting, queued, or held by ``holder``.
    Returns ``"requeued"``, ``"failed"``, or ``"left"`` (ended, or held by another
    worker: that worker's outcome stands).
    """
    now = _now(now)
    row = session.execute(
        sa.select(Experiment.status, Experiment.attempts, Experiment.worker_host, Experiment.waiting_since)
        .where(Experiment.id == experiment_id)
    ).one_or_none()
    if row is None:
        raise ExperimentNotFound(experiment_id)
    status, attempts, host, waiting = row
    if status in TERMINAL:
        return "left"
    free = status is S.QUEUED or waiting is not None or (holder is not None and host == holder)
    if not free:
        return "left"
    ownership = sa.or_(
        Experiment.status == S.QUEUED,
        Experiment.waiting_since.is_not(None),
        (Experiment.worker_host == holder) if holder is not None else sa.false(),
    )
    if attempts + 1 < max_attempts:
        result = session.execute(
            sa.update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.status == status, Experiment.attempts == attempts,
                   ownership)
            .values(**_requeued(now)),
            execution_options={"synchronize_session": False},
        )
        _expire(session, Experiment, experiment_id)
        return "requeued" if result.rowcount == 1 else "left"
    result = session.execute(
        sa.update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == status, Experiment.attempts == attempts,
               ownership)
        .values(
            status=S.FAILED, finished_at=now, lease_expires_at=None, waiting_since=None, waiting_for=None,
            failure_stage=stage,
            error=f"{reason} (attempt {attempts + 1} of {max_attempts}, none left)"[:4000],
        ),
        execution_options={"synchronize_session": False},
    )
    _expire(session, Experiment, experiment_id)
    return "failed" if result.rowcount == 1 else "left"


def record_internal_error(
    session: Session,
    experiment_id: int | None,
    *,
    task: str,
    stage: str,
    holder: str | None,
    error: str,
    traceback: str | None,
    max_attempts: int,
    now: datetime | None = None,
) -> str:
    """Count an unexpected exception (a bug of codecfleet) and re-queue its experiment
    within its attempt budget instead of failing it. Returns the outcome."""
    outcome = "none"
    if experiment_id is not None:
        try:
            outcome = requeue_from_anywhere(
                session, experiment_id, max_attempts=max_attempts, holder=holder, stage=stage,
                reason=f"internal error: {error}", now=now,
            )
        except ExperimentNotFound:
            experiment_id, outcome = None, "no such experiment"
    session.add(
        InternalError(
            experiment_id=experiment_id, task=task[:128], stage=stage[:32], worker_host=holder,
            error=error[:4000], traceback=(traceback or "")[-16000:] or None, outcome=outcome,
            created_at=_now(now),
        )
    )
    session.flush()
    return outcome


@dataclass(frozen=True)
class InternalErrorSummary:
    experiment_id: int | None
    count: int
    last_error: str
    last_stage: str
    last_at: datetime
    status: ExperimentStatus | None


def internal_errors(session: Session, *, limit: int = 50) -> list[InternalErrorSummary]:
    """Experiments that met an internal error, most recent first, with how many."""
    last = (
        sa.select(InternalError.experiment_id, sa.func.count().label("n"), sa.func.max(InternalError.id).label("last_id"))
        .group_by(InternalError.experiment_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(last.c.experiment_id, last.c.n, InternalError.error, InternalError.stage, InternalError.created_at,
                  Experiment.status)
        .join(InternalError, InternalError.id == last.c.last_id)
        .outerjoin(Experiment, Experiment.id == last.c.experiment_id)
        .order_by(last.c.last_id.desc())
        .limit(limit)
    ).all()
    return [InternalErrorSummary(r[0], r[1], r[2], r[3], r[4], ExperimentStatus(r[5]) if r[5] else None) for r in rows]


def internal_error_count(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(InternalError)) or 0


def campaign_experiment_ids(session: Session, campaign: str, *, only_unfinished: bool = False) -> list[int]:
    """Ids of the experiments of the campaign called ``campaign`` (unknown name: LookupError)."""
    campaign_id = session.scalar(sa.select(Campaign.id).where(Campaign.name == campaign))
    if campaign_id is None:
        raise LookupError(f"no campaign named {campaign!r}")
    query = sa.select(Experiment.id).where(Experiment.campaign_id == campaign_id).order_by(Experiment.id)
    if only_unfinished:
        query = query.where(Experiment.status.not_in(TERMINAL))
    return list(session.scalars(query))


def experiment_scores(session: Session, experiment_id: int) -> list[Score]:
    """The BD scores behind an experiment's result, following a reuse to its original."""
    experiment = get_experiment(session, experiment_id)
    source_id = experiment.reused_from_id or experiment_id
    return list(
        session.scalars(
            sa.select(Score).where(Score.experiment_id == source_id).order_by(Score.anchor_codec, Score.metric)
        )
    )


def stale_queued(session: Session, *, older_than_seconds: float, now: datetime | None = None, limit: int = 1000) -> list[int]:
    """Ids of experiments ``queued`` for longer than ``older_than_seconds`` (oldest first):
    their first message was probably lost (a broker outage between commit and send)."""
    cutoff = _now(now) - timedelta(seconds=older_than_seconds)
    return list(
        session.scalars(
            sa.select(Experiment.id)
            .where(Experiment.status == S.QUEUED, Experiment.queued_at < cutoff)
            .order_by(Experiment.queued_at, Experiment.id)
            .limit(limit)
        )
    )


def recent_experiments(session: Session, limit: int = 20) -> list[Experiment]:
    """The newest experiments, newest first."""
    return list(session.scalars(sa.select(Experiment).order_by(Experiment.id.desc()).limit(limit)))


__all__ = [
    "STAGE_OF_STATUS",
    "ExpiredLease",
    "ExperimentNotFound",
    "FailureSummary",
    "IllegalTransition",
    "InternalErrorSummary",
    "RankedCandidate",
    "RatePointResult",
    "RatePointSummary",
    "RecordOutcome",
    "ResultMismatch",
    "ScoreResult",
    "WAITING_FOR",
    "WaitingExperiment",
    "anchor_results",
    "attach_candidate",
    "campaign_experiment_ids",
    "cancel_experiment",
    "claim",
    "canonical_json",
    "config_hash",
    "create_campaign",
    "create_candidate",
    "create_experiment",
    "expired_leases",
    "PointMeasurement",
    "parent_head_points",
    "record_probe",
    "decoder_config",
    "decoder_hash",
    "experiment_decoder_hash",
    "experiment_measurements",
    "find_measurement",
    "experiment_scores",
    "find_reusable_experiment",
    "first_step",
    "get_experiment",
    "get_or_create_campaign",
    "get_or_create_clip",
    "hand_off",
    "internal_error_count",
    "internal_errors",
    "leaderboard",
    "reap",
    "record_anchor_result",
    "record_internal_error",
    "record_result",
    "record_sanitizer_verdict",
    "recent_experiments",
    "recent_failures",
    "renew_lease",
    "requeue",
    "requeue_from_anywhere",
    "reuse_result",
    "settings_hash",
    "stale_queued",
    "take_over",
    "top_k_candidates",
    "waiting_experiments",
]
