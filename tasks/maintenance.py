"""Keeping the fleet honest: the reaper, cancel, and a ping for measuring a hop.

Nothing stays running forever: every running experiment has a lease that its
worker renews, and a queued one whose message was lost is sent again. The reaper (beat, every ``CODECFLEET_REAP_INTERVAL_SECONDS``)
finds leases that ran out, re-queues those experiments while attempts remain
(``CODECFLEET_MAX_ATTEMPTS``, the first run included) and re-sends their chain
from the start after the commit; the others become ``timed_out`` with the
stage and the host that lost them.
"""

from __future__ import annotations

import logging
import time

import db.queries as q
from codecfleet.settings import get_settings
from db.models import ExperimentStatus
from tasks import _db, _enqueue
from tasks.app import TIME_LIMITS, app
from tasks.base import FleetTask, StepContext
from tasks.experiment import ENCODE_DECODE, GENERATE, SANITIZE, SCORE, first_task, task_id

log = logging.getLogger(__name__)

REAP = "codecfleet.maintenance.reap"
PING = "codecfleet.maintenance.ping"


def reap_step(ctx: StepContext, _experiment_id: int | None = None) -> None:
    settings = get_settings()
    with ctx.transaction() as session:
        for lease in q.expired_leases(session):
            outcome = q.reap(session, lease.experiment_id, max_attempts=settings.max_attempts)
            if outcome is None:
                continue
            experiment = q.get_experiment(session, lease.experiment_id)
            log.warning(
                "reaper: experiment %s (%s on %s, lease %s) -> %s",
                lease.experiment_id, lease.status.value, lease.worker_host,
                lease.lease_expires_at.isoformat(timespec="seconds"), outcome.value,
            )
            if outcome is ExperimentStatus.QUEUED:
                first = first_task(experiment)
                ctx.send_after_commit(first, experiment.id, task_id=task_id(experiment.id, experiment.attempts, first))
        # A queued experiment has no lease; if its first message was lost (the broker
        # failed between the commit and the send) send it again: every step is idempotent.
        for experiment_id in q.stale_queued(session, older_than_seconds=settings.lease_seconds):
            experiment = q.get_experiment(session, experiment_id)
            first = first_task(experiment)
            log.warning("reaper: experiment %s queued since %s; sending %s again", experiment_id, experiment.queued_at, first)
            ctx.send_after_commit(first, experiment_id, task_id=task_id(experiment_id, experiment.attempts, first))


def cancel(experiment_ids: list[int], *, reason: str = "cancelled by the user") -> list[int]:
    """Mark the experiments cancelled and revoke their queued tasks; the ids actually cancelled.

    A task already running notices at its next lease renewal (the heartbeat
    finds the experiment no longer held) and kills its sandbox; the revoke
    stops messages still in the queues from starting at all.
    """
    cancelled: list[tuple[int, int]] = []
    with _db.transaction() as session:
        for experiment_id in experiment_ids:
            if q.cancel_experiment(session, experiment_id, reason=reason):
                cancelled.append((experiment_id, q.get_experiment(session, experiment_id).attempts))
    if cancelled and not _enqueue.embedded():
        ids = [task_id(e, a, t) for e, a in cancelled for t in (GENERATE, SANITIZE, ENCODE_DECODE, SCORE)]
        try:
            app.control.revoke(ids)
        except Exception as exc:  # noqa: BLE001 - the database already says cancelled; tasks check it
            log.warning("cancel: could not broadcast revoke (%s); tasks will see the cancel in the database", exc)
    return [e for e, _ in cancelled]


@app.task(bind=True, base=FleetTask, name=REAP, soft_time_limit=TIME_LIMITS[REAP][0], time_limit=TIME_LIMITS[REAP][1])
def reap(self: FleetTask) -> None:
    """Beat: re-queue or time out experiments whose worker stopped renewing its lease."""
    self.run_step(reap_step, None)


@app.task(name=PING, soft_time_limit=TIME_LIMITS[PING][0], time_limit=TIME_LIMITS[PING][1])
def ping(sent_at: float) -> float:
    """Seconds from ``sent_at`` (``time.time()`` at the sender) to this task starting: one hop."""
    return time.time() - sent_at
