"""Sending the next step: to the broker (the fleet) or to an in-process queue (embedded).

Task code calls :func:`send` and never knows which. In the fleet a message goes
to Redis through Celery, with ids only. In the embedded default (no
``CODECFLEET_BROKER_URL``) it is appended to a FIFO that :func:`drain` runs
here, one task after the other, through the very same task objects
(``Task.apply``): a chain of four steps is a loop, not a recursion.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from config import get_settings

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


@dataclass(frozen=True)
class Whereabouts:
    """Where a task's message is in the broker: in a queue (1 = next to be taken, of
    ``length``), or taken by a worker and not yet acknowledged (``position`` None)."""

    queue: str
    position: int | None
    length: int


#: kombu's Redis transport keeps priority levels > 0 in keys ``<queue>\x06\x16<n>``.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def _task_id_of(raw: bytes | str) -> str | None:
    try:
        message = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if isinstance(message, list) and message:  # the unacked hash holds [message, exchange, routing key]
        message = message[0]
    if not isinstance(message, dict):
        return None
    headers = message.get("headers") or {}
    return headers.get("id") or (message.get("properties") or {}).get("correlation_id")


def locate(queues: Iterable[str]) -> dict[str, Whereabouts]:
    """Every message now in the broker for ``queues`` (and every unacknowledged one),
    by task id. Reads the Redis lists kombu keeps (LRANGE; the oldest message is at
    the right end and is taken first) and its ``unacked`` hash. Empty when embedded.
    """
    settings = get_settings()
    if not settings.broker_url:
        return {}
    import redis

    found: dict[str, Whereabouts] = {}
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        for queue in dict.fromkeys(queues):
            for key in (queue, *(f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS)):
                raw = client.lrange(key, 0, -1)
                for index, item in enumerate(raw):
                    tid = _task_id_of(item)
                    if tid:
                        found[tid] = Whereabouts(queue, len(raw) - index, len(raw))
        for item in client.hvals("unacked"):
            tid = _task_id_of(item)
            if tid and tid not in found:
                found[tid] = Whereabouts("unacked", None, 0)
    finally:
        client.close()
    return found


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

        # The task modules register on import; a worker imports them at start
        # (the app's ``include``), the embedded loop on first drain.
        app.loader.import_default_modules()
        while fifo:
            message = fifo.popleft()
            args = [] if message.experiment_id is None else [message.experiment_id]
            app.tasks[message.task].apply(args=args, task_id=message.task_id)
            ran += 1
    finally:
        _local.draining = False
    return ran
