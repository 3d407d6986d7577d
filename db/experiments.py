"""The experiment aggregate: creating experiments and moving them through their
state machine (transitions, claims, hand-offs, take-overs, leases and the
reaper's decisions, re-queueing, cancelling), and the internal errors met on
the way.

Tasks call these with a session they own (``db.session.session_scope``); no
function here commits. Every status change is a single conditional statement,
never a read followed by a write, so two workers cannot both win. The only
moves to ``succeeded`` are in ``db.results`` (``record_result``,
``reuse_result``). The private helpers ``_now``, ``_expire`` and
``_transition`` are shared with the other query modules, which import this
one (it imports only ``db.models`` and ``db.hashing``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from db.hashing import config_hash
from db.models import (
    RUNNING,
    STAGE_TIMESTAMPS,
    TERMINAL,
    TRANSITIONS,
    Campaign,
    Experiment,
    ExperimentStatus,
    InternalError,
    Stage,
    utcnow,
)


S = ExperimentStatus


#: The pipeline stage named in ``failure_stage`` when a running status ends badly.
STAGE_OF_STATUS: dict[ExperimentStatus, Stage] = {
    S.QUEUED: Stage.QUEUE,
    S.GENERATING: Stage.GENERATE,
    S.SANITIZING: Stage.SANITIZE,
    S.ENCODING: Stage.ENCODE,
    S.SCORING: Stage.SCORE,
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


# --- shared helpers ---------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return utcnow() if now is None else now


def _current_status(session: Session, experiment_id: int) -> ExperimentStatus:
    status = session.scalar(sa.select(Experiment.status).where(Experiment.id == experiment_id))
    if status is None:
        raise ExperimentNotFound(experiment_id)
    return ExperimentStatus(status)


def _expire(session: Session, model: type[Any], primary_key: int) -> None:
    # The conditional UPDATEs of the query modules bypass the ORM; drop any stale copy so
    # the next access re-reads.
    obj = session.identity_map.get(identity_key(model, primary_key))
    if obj is not None:
        session.expire(obj)


def _update_experiment(
    session: Session, experiment_id: int, conditions: Sequence[Any], values: Mapping[str, Any]
) -> bool:
    """One conditional ``UPDATE experiments SET values WHERE id = experiment_id AND
    conditions`` (claim, hand-off, take-over); True when it changed the row. Any
    stale ORM copy of the experiment is dropped either way."""
    result = session.execute(
        sa.update(Experiment).where(Experiment.id == experiment_id, *conditions).values(**values),
        execution_options={"synchronize_session": False},
    )
    _expire(session, Experiment, experiment_id)
    return result.rowcount == 1


# --- creating and finding experiments ---------------------------------------


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
    if not _update_experiment(
        session, experiment_id,
        [sa.or_(Experiment.candidate_id.is_(None), Experiment.candidate_id == candidate_id)],
        {"candidate_id": candidate_id},
    ):
        current = session.scalar(sa.select(Experiment.candidate_id).where(Experiment.id == experiment_id))
        if current is None:
            raise ExperimentNotFound(experiment_id)
        raise ValueError(f"experiment {experiment_id} already has candidate {current}, not {candidate_id}")
    _expire(session, Experiment, experiment_id)


def campaign_experiment_ids(session: Session, campaign: str, *, only_unfinished: bool = False) -> list[int]:
    """Ids of the experiments of the campaign called ``campaign`` (unknown name: LookupError)."""
    campaign_id = session.scalar(sa.select(Campaign.id).where(Campaign.name == campaign))
    if campaign_id is None:
        raise LookupError(f"no campaign named {campaign!r}")
    query = sa.select(Experiment.id).where(Experiment.campaign_id == campaign_id).order_by(Experiment.id)
    if only_unfinished:
        query = query.where(Experiment.status.not_in(TERMINAL))
    return list(session.scalars(query))


def recent_experiments(session: Session, limit: int = 20) -> list[Experiment]:
    """The newest experiments, newest first."""
    return list(session.scalars(sa.select(Experiment).order_by(Experiment.id.desc()).limit(limit)))


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


# --- the state machine ------------------------------------------------------


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

    ``succeeded`` is not reachable here: only :func:`db.results.record_result` (with the
    measurements) and :func:`db.results.reuse_result` (with the original) finish an
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
        # Stage() refuses a name outside the one list before the CHECK would.
        "failure_stage": None if failure_stage is None else Stage(failure_stage).value,
        "error": error,
        "duplicate_of_id": duplicate_of_id,
        "worker_host": worker_host,
        "device": device,
        "isolation": isolation,
    }
    values.update({k: v for k, v in optional.items() if v is not None})
    if _update_experiment(session, experiment_id, [Experiment.status.in_(TRANSITIONS[to])], values):
        return True
    current = _current_status(session, experiment_id)
    if current is to:
        return False
    raise IllegalTransition(experiment_id, current, to)


def cancel_experiment(session: Session, experiment_id: int, *, reason: str, now: datetime | None = None) -> bool:
    """Mark a queued or running experiment ``cancelled``; True when this call did it.

    An experiment that already ended (succeeded, failed, cancelled...) is left
    as it is and False is returned.
    """
    try:
        return _transition(session, experiment_id, S.CANCELLED, error=reason, now=now)
    except IllegalTransition:
        return False


# --- leases, the reaper, take-over -------------------------------------------


def renew_lease(session: Session, experiment_id: int, *, lease_seconds: float, now: datetime | None = None) -> bool:
    """Extend a running experiment's lease (a heartbeat).

    False when the experiment is no longer running (cancelled, reaped, finished):
    the worker should stop working on it.
    """
    return _update_experiment(
        session, experiment_id, [Experiment.status.in_(RUNNING), Experiment.waiting_since.is_(None)],
        {"lease_expires_at": _now(now) + timedelta(seconds=lease_seconds)},
    )


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
    conditions = [Experiment.status.in_(RUNNING), Experiment.attempts + 1 < max_attempts]
    if only_if_lease_expired:
        conditions.append(Experiment.lease_expires_at < now)
    if _update_experiment(session, experiment_id, conditions, _requeued(now)):
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


@dataclass(frozen=True)
class ExpiredLease:
    experiment_id: int
    status: ExperimentStatus
    worker_host: str | None
    lease_expires_at: datetime
    attempts: int


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
    timed_out = _update_experiment(
        session, experiment_id, [Experiment.status == status, Experiment.lease_expires_at < now],
        {"status": S.TIMED_OUT, "finished_at": now, "lease_expires_at": None,
         "failure_stage": STAGE_OF_STATUS[status], "error": error},
    )
    return S.TIMED_OUT if timed_out else None


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
    conditions = [Experiment.status == status, holder_matches]
    if require_expired_lease:
        conditions.append(sa.or_(Experiment.lease_expires_at.is_(None), Experiment.lease_expires_at < now))
    return _update_experiment(
        session,
        experiment_id,
        conditions,
        dict(
            worker_host=new_holder,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            waiting_since=None,
            waiting_for=None,
        ),
    )


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
        Experiment.status.in_(sources),
        Experiment.waiting_since.is_not(None),
        Experiment.waiting_for == step,
    ]
    if node is not None:
        conditions.append(Experiment.worker_host == node)
    return _update_experiment(
        session,
        experiment_id,
        conditions,
        dict(
            status=to,
            worker_host=holder,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            waiting_since=None,
            waiting_for=None,
            **{STAGE_TIMESTAMPS[to]: now},
            **{k: v for k, v in values.items() if v is not None},
        ),
    )


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
    return _update_experiment(
        session, experiment_id, [Experiment.status == status, Experiment.worker_host == holder], values
    )


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
    unchanged = [Experiment.status == status, Experiment.attempts == attempts, ownership]
    if attempts + 1 < max_attempts:
        return "requeued" if _update_experiment(session, experiment_id, unchanged, _requeued(now)) else "left"
    failed = _update_experiment(session, experiment_id, unchanged, {
        "status": S.FAILED, "finished_at": now, "lease_expires_at": None, "waiting_since": None, "waiting_for": None,
        "failure_stage": stage, "error": f"{reason} (attempt {attempts + 1} of {max_attempts}, none left)"[:4000],
    })
    return "failed" if failed else "left"


# --- internal errors --------------------------------------------------------


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


__all__ = [
    "ExperimentNotFound",
    "ExpiredLease",
    "IllegalTransition",
    "InternalErrorSummary",
    "STAGE_OF_STATUS",
    "WAITING_FOR",
    "WaitingExperiment",
    "attach_candidate",
    "campaign_experiment_ids",
    "cancel_experiment",
    "claim",
    "create_experiment",
    "expired_leases",
    "first_step",
    "get_experiment",
    "hand_off",
    "internal_error_count",
    "internal_errors",
    "reap",
    "recent_experiments",
    "record_internal_error",
    "renew_lease",
    "requeue",
    "requeue_from_anywhere",
    "stale_queued",
    "take_over",
    "transition",
    "waiting_experiments",
]
