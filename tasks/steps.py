"""The steps of one experiment, by name: light enough for every caller.

Task names, the step each one is (``experiments.waiting_for``), the Celery task id
of one step of one attempt, the queue its message travels on, and the one way a
step records a failure. The step bodies live in :mod:`tasks.experiment`; the
fleet API, the reaper and ``codecfleet status`` need only these names, so they
import this module and never load torch.
"""

from __future__ import annotations

import logging

from db import experiments
from db import engine
from db.models import Experiment, ExperimentStatus, Stage
from tasks.app import ROUTES, worker_queue

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
    if step == "score":
        return worker_queue(node or "?")
    return ROUTES[STEP_TASKS[step]]["queue"]
