"""Sending the next step: to the broker (the fleet) or to an in-process queue (embedded).

Task code calls :func:`send` and never knows which. In the fleet a message goes
to Redis through Celery, with ids only. In the embedded default (no
``CODECFLEET_BROKER_URL``) it is appended to a FIFO that :func:`drain` runs
here, one task after the other, through the very same task objects
(``Task.apply``): a chain of four steps is a loop, not a recursion.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass

from codecfleet.settings import get_settings

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Message:
    """A message is a task name and an experiment id, nothing else: never code, frames or bytes."""

    task: str
    experiment_id: int | None
    queue: str | None = None
    task_id: str | None = None


_local = threading.local()


def embedded() -> bool:
    """True when no broker is configured: tasks run in this process."""
    return not get_settings().broker_url


def _fifo() -> collections.deque[Message]:
    if not hasattr(_local, "fifo"):
        _local.fifo = collections.deque()
        _local.draining = False
    return _local.fifo


def send(task: str, experiment_id: int | None, *, queue: str | None = None, task_id: str | None = None) -> None:
    """Send ``task`` for ``experiment_id``; call only after the transaction that made it due committed."""
    message = Message(task, experiment_id, queue, task_id)
    if embedded():
        _fifo().append(message)
        return
    from tasks.app import PUBLISH_RETRY_POLICY, app

    args = [] if experiment_id is None else [int(experiment_id)]
    options = {"queue": queue} if queue else {}
    app.send_task(task, args=args, task_id=task_id, retry=True, retry_policy=PUBLISH_RETRY_POLICY, **options)


def drain() -> int:
    """Run every queued in-process message (embedded mode); returns how many ran.

    Re-entrant calls return at once: the outermost loop runs what they queued.
    """
    fifo = _fifo()
    if _local.draining:
        return 0
    _local.draining = True
    ran = 0
    try:
        from tasks.app import app

        while fifo:
            message = fifo.popleft()
            args = [] if message.experiment_id is None else [message.experiment_id]
            app.tasks[message.task].apply(args=args, task_id=message.task_id)
            ran += 1
    finally:
        _local.draining = False
    return ran
