"""The steps of one experiment, by name: light enough for every caller.

Task names, the step each one is (``experiments.waiting_for``), the Celery task id
of one step of one attempt, the queue its message travels on, and the one way a
step records a failure, and cancelling. The step bodies live in :mod:`tasks.experiment`; the
fleet API, the reaper and ``codecfleet status`` need only these names, so they
import this module and never load torch.
"""

from __future__ import annotations

import logging

from db import engine, experiments
from db.models import Experiment, ExperimentStatus, Stage
from tasks import _enqueue

log = logging.getLogger(__name__)
S = ExperimentStatus

GENERATE = "codecfleet.experiment.generate"
SANITIZE = "codecfleet.experiment.sanitize"
ENCODE_DECODE = "codecfleet.experiment.encode_decode"
SCORE = "codecfleet.experiment.score"
STAGES = {GENERATE: "generate", SANITIZE: "sanitize", ENCODE_DECODE: "encode_decode", SCORE: "score"}
#: Step name (``experiments.waiting_for``) -> task name.
STEP_TASKS = {stage: task for task, stage in STAGES.items()}


def task_id(experiment_id: int, attempt: int, task: str) -> str:
    """The Celery task id of one step of one attempt: known in advance, so ``cancel``
    can revoke it and Flower shows which experiment a task belongs to."""
    return f"cf-{experiment_id}-a{attempt}-{STAGES[task]}"


def first_task(experiment: Experiment) -> str:
    """Where the chain starts: generate unless the code is already there."""
    return STEP_TASKS[experiments.first_step(experiment.candidate_id)]


# --- recording ends ---------------------------------------------------------


def end_failed(experiment_id: int, stage: str, reason: str, *, holder: str | None = None) -> None:
    """Record ``failed`` with stage and reason, unless the experiment already ended
    (cancelled or reaped meanwhile: that outcome stands) or, with ``holder``, another
    worker holds it now (it was re-queued and taken: that run's outcome will stand)."""
    with engine.transaction() as session:
        try:
            if holder is not None:
                experiment = experiments.get_experiment(session, experiment_id)
                ours = experiment.worker_host == holder or experiment.waiting_since is not None
                if experiment.status is not S.QUEUED and not ours:
                    log.info("experiment %s: not recording failure %s: %s; %s holds it now (%s)",
                             experiment_id, stage, reason, experiment.worker_host, experiment.status.value)
                    return
            experiments.transition(session, experiment_id, S.FAILED, failure_stage=stage, error=reason[:4000])
        except experiments.IllegalTransition as exc:
            log.info("experiment %s: not recording failure (%s): %s", experiment_id, reason, exc)
        except experiments.ExperimentNotFound:
            log.warning("experiment %s does not exist; failure %s: %s not recorded", experiment_id, stage, reason)


#: The stage recorded when a step dies of something unexpected.
STEP_STAGE = {
    GENERATE: Stage.GENERATE,
    SANITIZE: Stage.SANITIZE,
    ENCODE_DECODE: Stage.ENCODE,
    SCORE: Stage.SCORE,
}


def queue_of(step: str, node: str | None) -> str:
    """The broker queue a step's message travels on (``score``: the decoding node's own)."""
    # Celery (tasks.app) loads only here and in cancel: `codecfleet status` on the
    # embedded default never needs a queue name, and answers without it.
    from tasks.app import ROUTES, worker_queue

    if step == "score":
        return worker_queue(node or "?")
    return ROUTES[STEP_TASKS[step]]["queue"]


# --- cancelling ---------------------------------------------------------------


def cancel(experiment_ids: list[int], *, reason: str = "cancelled by the user") -> list[int]:
    """Mark the experiments cancelled and revoke their queued tasks; the ids actually cancelled.

    A task already running notices at its next lease renewal (the heartbeat
    finds the experiment no longer held) and kills its sandbox; the revoke
    stops messages still in the queues from starting at all.
    """
    cancelled: list[tuple[int, int]] = []
    with engine.transaction() as session:
        for experiment_id in experiment_ids:
            if experiments.cancel_experiment(session, experiment_id, reason=reason):
                cancelled.append((experiment_id, experiments.get_experiment(session, experiment_id).attempts))
    if cancelled and not _enqueue.embedded():
        ids = [task_id(e, a, t) for e, a in cancelled for t in (GENERATE, SANITIZE, ENCODE_DECODE, SCORE)]
        try:
            from tasks.app import app

            app.control.revoke(ids)
        except Exception as exc:  # noqa: BLE001 - the database already says cancelled; tasks check it
            log.warning("cancel: could not broadcast revoke (%s); tasks will see the cancel in the database", exc)
    return [e for e, _ in cancelled]
