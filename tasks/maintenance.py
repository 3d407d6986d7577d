"""Keeping the fleet honest: the reaper, and a ping for measuring a hop (cancel is
:func:`tasks.steps.cancel`: the fleet API needs it without loading the task base).

Nothing stays running forever, and waiting is not running. The reaper (beat,
every ``CODECFLEET_REAP_INTERVAL_SECONDS``) does two things:

* **leases**: a worker that holds an experiment renews its lease; a lease
  that ran out means the worker is gone. The experiment is re-queued while
  attempts remain (``CODECFLEET_MAX_ATTEMPTS``, the first run included) and
  its chain re-sent from the start after the commit; otherwise it becomes
  ``timed_out`` with the stage and the host that lost it.
* **waiting**: an experiment between two steps has no lease at all, however
  long the queue in front of it. Once it has waited longer than a lease, the
  reaper looks for its message in the broker. Found: it is only waiting, and
  nothing happens. Not found (the broker lost it, or a worker died between
  commit and send), or held unacknowledged by a worker that never claimed the
  experiment (killed between taking the message and starting it; Redis would
  give it back only after the visibility timeout): the message is sent again;
  every step is idempotent. A
  ``score`` waiting on the private queue of a node that no longer answers a
  ping is re-queued (its decoded frames were on that node).
"""

from __future__ import annotations

import logging
import time

from config import get_settings
from db import experiments
from db.models import ExperimentStatus, Stage
from tasks import _enqueue
from tasks.app import TIME_LIMITS, app
from tasks.base import FleetTask, StepContext
from tasks.steps import STEP_TASKS, first_task, queue_of, task_id

log = logging.getLogger(__name__)

REAP = "codecfleet.maintenance.reap"
PING = "codecfleet.maintenance.ping"


def reap_step(ctx: StepContext, _experiment_id: int | None = None) -> None:
    settings = get_settings()
    with ctx.transaction() as session:
        for lease in experiments.expired_leases(session):
            outcome = experiments.reap(session, lease.experiment_id, max_attempts=settings.max_attempts)
            if outcome is None:
                continue
            experiment = experiments.get_experiment(session, lease.experiment_id)
            log.warning(
                "reaper: experiment %s (%s on %s, lease %s) -> %s",
                lease.experiment_id, lease.status.value, lease.worker_host,
                lease.lease_expires_at.isoformat(timespec="seconds"), outcome.value,
            )
            if outcome is ExperimentStatus.QUEUED:
                first = first_task(experiment)
                ctx.send_after_commit(first, experiment.id, task_id=task_id(experiment.id, experiment.attempts, first))
        waiting = experiments.waiting_experiments(session, older_than_seconds=settings.lease_seconds)
    if waiting:
        _sweep_waiting(ctx, waiting)


def _sweep_waiting(ctx: StepContext, waiting: list[experiments.WaitingExperiment]) -> None:
    """Send again the hand-off messages the broker no longer has (see the module docstring)."""
    settings = get_settings()
    in_broker = _enqueue.locate(queue_of(w.waiting_for, w.node) for w in waiting)
    dead_nodes: dict[str, bool] = {}
    tids = [task_id(w.experiment_id, w.attempts, STEP_TASKS[w.waiting_for]) for w in waiting]
    taken = [tid for tid in tids if (where := in_broker.get(tid)) is not None and where.queue == "unacked"]
    started = _taken_by_live_workers(taken) if taken else set()
    for w, tid in zip(waiting, tids, strict=True):
        task = STEP_TASKS[w.waiting_for]
        where = in_broker.get(tid)
        if w.waiting_for == "score" and where is not None and where.queue != "unacked":
            if w.node not in dead_nodes:
                dead_nodes[w.node] = not _node_answers(w.node)
            if dead_nodes[w.node]:
                with ctx.transaction() as session:
                    outcome = experiments.requeue_from_anywhere(
                        session, w.experiment_id, max_attempts=settings.max_attempts, holder=None, stage=Stage.SCORE,
                        reason=f"worker {w.node}, which holds the decoded rate points, is gone",
                    )
                    experiment = experiments.get_experiment(session, w.experiment_id)
                    log.warning("reaper: experiment %s waits for score on %s, which does not answer; %s",
                                w.experiment_id, w.node, outcome)
                    if outcome == "requeued":
                        first = first_task(experiment)
                        ctx.send_after_commit(first, w.experiment_id,
                                              task_id=task_id(w.experiment_id, experiment.attempts, first))
            continue
        if where is not None and where.queue != "unacked":
            continue  # only waiting: a backlog is not a fault
        if where is not None and tid in started:
            continue  # a live worker has it and is starting it (a sandbox can take seconds to set up)
        # Not in any queue; or taken by a worker (unacknowledged) that has not claimed the
        # experiment within a lease and that no live worker reports as active or reserved,
        # i.e. a worker killed between taking the message and starting it: Redis gives such
        # a message back only after the visibility timeout (hours). Either way it is sent
        # again; a duplicate delivery changes nothing.
        log.warning("reaper: experiment %s has waited for %s since %s and its message is %s; sending it again",
                    w.experiment_id, w.waiting_for, w.waiting_since.isoformat(timespec="seconds"),
                    "not in the broker" if where is None else "held unacknowledged by a worker that never started it")
        queue = queue_of(w.waiting_for, w.node) if w.waiting_for == "score" else None
        ctx.send_after_commit(task, w.experiment_id, queue=queue, task_id=tid)


def _taken_by_live_workers(task_ids: list[str]) -> set[str]:
    """Of ``task_ids``, those a live worker reports as executing or reserved (Celery's
    ``inspect``: a worker that answers has the message and will claim the experiment
    once its step is set up). Cannot tell: all of them, and look again next time."""
    try:
        inspect = app.control.inspect(timeout=1.0)
        replies = [inspect.active() or {}, inspect.reserved() or {}]
    except Exception as exc:  # noqa: BLE001 - the broker may be restarting
        log.warning("reaper: could not ask the workers what they run: %s", exc)
        return set(task_ids)
    found = {t.get("id") for reply in replies for tasks in reply.values() for t in tasks or ()}
    return found & set(task_ids)


def _node_answers(node: str | None) -> bool:
    if not node:
        return False
    try:
        return bool(app.control.ping(destination=[node], timeout=2.0))
    except Exception as exc:  # noqa: BLE001 - cannot tell: assume alive, look again next time
        log.warning("reaper: could not ping %s: %s", node, exc)
        return True


@app.task(bind=True, base=FleetTask, name=REAP, soft_time_limit=TIME_LIMITS[REAP][0], time_limit=TIME_LIMITS[REAP][1])
def reap(self: FleetTask) -> None:
    """Beat: re-queue or time out experiments whose worker stopped renewing its lease."""
    self.run_step(reap_step, None)


@app.task(name=PING, soft_time_limit=TIME_LIMITS[PING][0], time_limit=TIME_LIMITS[PING][1])
def ping(sent_at: float) -> float:
    """Seconds from ``sent_at`` (``time.time()`` at the sender) to this task starting: one hop."""
    return time.time() - sent_at
