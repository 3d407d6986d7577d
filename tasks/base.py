"""The one task base class: cross-cutting work done once (warehouse's ``tasks.py`` pattern).

A task body is a *step*: a plain function ``step(ctx, experiment_id)`` that
opens its own transactions with ``ctx.transaction()`` and names the next
step with ``ctx.send_after_commit(...)``. :meth:`FleetTask.run_step` then

* sends the queued messages only after the step returned, i.e. after every
  transaction it opened has committed: a worker never sends work for a row
  another transaction cannot see yet, and a rolled-back step sends nothing;
* turns transient infrastructure errors (database or broker unreachable) into
  ``self.retry`` with exponential backoff; every step is idempotent, so a
  retry repeats nothing that was done;
* records a :class:`StepFailed` (the candidate's fault, or an input that
  cannot be measured) as the experiment's failure with its stage and reason,
  and does not retry it: a candidate's fault stays the candidate's fault;
* treats :class:`db.experiments.IllegalTransition` from an experiment this step
  no longer holds as what it is, a lost race (cancelled, reaped, taken over
  meanwhile): it logs it and changes nothing;
* treats anything else as a **bug of codecfleet** ("internal error"): it is
  counted in ``internal_errors`` (``codecfleet status`` lists them) and the
  experiment is re-queued within its attempt budget, never failed for it while
  attempts remain.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import celery
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery.exceptions import Retry, SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from db import engine
from tasks import _enqueue, steps

log = logging.getLogger(__name__)

#: Errors of the infrastructure, not of the experiment: retried with backoff.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
)

MAX_RETRIES = 12
BACKOFF_CAP_SECONDS = 60.0


def backoff_seconds(retries: int) -> float:
    """1, 2, 4, ... seconds (capped at a minute) with +-25 % jitter so workers do not stampede."""
    base = min(BACKOFF_CAP_SECONDS, 2.0**retries)
    return base * random.uniform(0.75, 1.25)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT_ERRORS)


def holder_id(node: str, pid: int | None = None) -> str:
    """What ``experiments.worker_host`` holds: the Celery node name and the process id."""
    return f"{node}[{os.getpid() if pid is None else pid}]"


def parse_holder(holder: str | None) -> tuple[str | None, int | None]:
    if not holder or not holder.endswith("]") or "[" not in holder:
        return holder, None
    node, _, pid = holder[:-1].rpartition("[")
    try:
        return node, int(pid)
    except ValueError:
        return holder, None


@dataclass
class StepContext:
    """What a step gets: who runs it, a way to open transactions, an outbox."""

    node: str
    task_name: str
    private_queue: str | None
    outbox: list[_enqueue.Message] = field(default_factory=list)

    @property
    def holder(self) -> str:
        return holder_id(self.node)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with engine.transaction() as session:
            yield session

    def send_after_commit(
        self, task: str, experiment_id: int | None, *, queue: str | None = None, task_id: str | None = None
    ) -> None:
        self.outbox.append(_enqueue.Message(task, experiment_id, queue, task_id))


class StepFailed(Exception):
    """Raised by a step to end its experiment as ``failed`` with ``stage`` and ``reason``."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class FleetTask(celery.Task):
    abstract = True
    max_retries = MAX_RETRIES
    ignore_result = True

    def node_name(self) -> str:
        hostname = getattr(self.request, "hostname", None)
        return hostname or f"embedded@{socket.gethostname()}"

    def run_step(self, step: Callable[[StepContext, int | None], None], experiment_id: int | None) -> None:
        from tasks.app import TIME_LIMITS, worker_queue

        hostname = getattr(self.request, "hostname", None)
        ctx = StepContext(
            node=self.node_name(),
            task_name=self.name,
            private_queue=worker_queue(hostname) if hostname and not _enqueue.embedded() else None,
        )
        try:
            try:
                step(ctx, experiment_id)
            except StepFailed as exc:
                ctx.outbox.clear()
                self._fail(experiment_id, exc.stage, exc.reason)
            except SoftTimeLimitExceeded:
                ctx.outbox.clear()
                soft = TIME_LIMITS.get(self.name, (None, None))[0]
                self._fail(
                    experiment_id,
                    steps.STEP_STAGE.get(self.name, self.name),
                    f"the {steps.STEP_STAGE.get(self.name, self.name)} step exceeded its soft time limit of {soft} s",
                )
            for message in ctx.outbox:
                _enqueue.send(message.task, message.experiment_id, queue=message.queue, task_id=message.task_id)
        except Retry:
            raise
        except Exception as exc:
            if is_transient(exc):
                countdown = backoff_seconds(self.request.retries or 0)
                log.warning(
                    "%s[%s] experiment %s: transient %s: %s; retry %d in %.1f s",
                    self.name, self.request.id, experiment_id, type(exc).__name__, exc,
                    (self.request.retries or 0) + 1, countdown,
                )
                raise self.retry(exc=exc, countdown=countdown) from exc
            from db.experiments import IllegalTransition

            if isinstance(exc, IllegalTransition) and experiment_id is not None and not self._holds(experiment_id, ctx):
                log.info("%s experiment %s: lost a race, the experiment moved on meanwhile (%s); nothing to do",
                         self.name, experiment_id, exc)
                return
            self._internal_error(experiment_id, ctx, exc)

    def _holds(self, experiment_id: int, ctx: StepContext) -> bool:
        from db.experiments import get_experiment

        with ctx.transaction() as session:
            experiment = get_experiment(session, experiment_id)
            return experiment.worker_host == ctx.holder and experiment.waiting_since is None

    def _internal_error(self, experiment_id: int | None, ctx: StepContext, exc: Exception) -> None:
        """A bug: count it, and give the experiment another attempt (or fail it, budget spent)."""
        from config import get_settings
        from db.experiments import first_step, get_experiment, record_internal_error

        stage = steps.STEP_STAGE.get(self.name, self.name)
        error = f"{type(exc).__name__}: {exc}"
        log.exception("%s experiment %s: INTERNAL ERROR (a bug of codecfleet): %s", self.name, experiment_id, error)
        resend = None
        try:
            with ctx.transaction() as session:
                outcome = record_internal_error(
                    session, experiment_id, task=self.name, stage=stage, holder=ctx.holder, error=error,
                    traceback="".join(traceback.format_exception(exc)), max_attempts=get_settings().max_attempts,
                )
                if outcome == "requeued":
                    experiment = get_experiment(session, experiment_id)
                    resend = (first_step(experiment.candidate_id), experiment.attempts)
        except Exception:  # noqa: BLE001 - the database itself may be what failed
            log.exception("%s experiment %s: could not record the internal error", self.name, experiment_id)
            return
        log.warning("%s experiment %s: internal error recorded; experiment %s", self.name, experiment_id, outcome)
        if resend is not None:
            task = steps.STEP_TASKS[resend[0]]
            _enqueue.send(task, experiment_id, task_id=steps.task_id(experiment_id, resend[1], task))

    def _fail(self, experiment_id: int | None, stage: str, reason: str) -> None:
        if experiment_id is None:
            return
        steps.end_failed(experiment_id, stage, reason, holder=holder_id(self.node_name()))
