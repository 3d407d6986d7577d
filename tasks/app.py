"""The Celery application: broker, queues, routing, time limits and reliability settings.

Everything about *where* and *how long* a task runs is here, in one place. Why
each reliability setting is what it is (see DESIGN.md section 8):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acked only
  after its task returns, so a worker killed mid-encode (SIGKILL, OOM, a lost
  host) leaves the message unacked and it is delivered again. Every task is
  idempotent for that reason (see :mod:`tasks.experiment`).
* ``worker_prefetch_multiplier = 1``: encodes are long; a worker must not hoard
  messages that an idle GPU could run.
* ``visibility_timeout`` above the longest task: Redis redelivers an unacked
  message after it, so a shorter one would run a healthy long task twice. The
  lease and the reaper (:mod:`tasks.maintenance`) bring an experiment back far
  sooner when its worker is gone; the redelivery is the second safety net.
* soft and hard time limits per stage (prefork only): the soft one raises in
  the task so it can record why it stopped; the hard one kills the child, and
  the lease then expires and the reaper takes over.
* no result backend: experiment status lives in the database, never in
  Celery's results. Messages carry experiment ids only.
* Redis must persist its data (AOF, ``appendonly yes``): a broker restart must
  not lose queued or unacked messages (see deploy/README.md).
"""

from __future__ import annotations

import logging

from celery import Celery, signals
from kombu import Exchange, Queue

from config import get_settings

log = logging.getLogger(__name__)

QUEUES = ("llm", "cpu", "gpu")
EXCHANGE = Exchange("codecfleet", type="direct")

#: (soft, hard) time limits in seconds per task. The soft limit comes first so
#: the task can record why it stopped. The gpu stages' hard limits stay below
#: the broker visibility timeout and the systemd TimeoutStopSec of the units.
TIME_LIMITS: dict[str, tuple[int, int]] = {
    "codecfleet.experiment.generate": (540, 600),
    "codecfleet.experiment.sanitize": (60, 90),
    "codecfleet.experiment.encode_decode": (1740, 1800),
    "codecfleet.experiment.score": (540, 600),
    "codecfleet.maintenance.reap": (50, 60),
    "codecfleet.maintenance.ping": (10, 20),
}

#: Task name -> queue. ``score`` is not routed here: it goes to the private
#: queue of the worker that decoded (:func:`worker_queue`), see tasks/experiment.py.
ROUTES: dict[str, dict[str, str]] = {
    "codecfleet.experiment.generate": {"queue": "llm"},
    "codecfleet.experiment.sanitize": {"queue": "cpu"},
    "codecfleet.experiment.encode_decode": {"queue": "gpu"},
    "codecfleet.experiment.score": {"queue": "gpu"},
    "codecfleet.maintenance.reap": {"queue": "cpu"},
    "codecfleet.maintenance.ping": {"queue": "cpu"},
}

#: Publishing survives a broker restart of a few seconds instead of failing the task.
PUBLISH_RETRY_POLICY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def worker_queue(hostname: str) -> str:
    """The private queue of one worker (``host.<node name>``): work that must stay on it."""
    return f"host.{hostname}"


def make_app(broker_url: str | None = None) -> Celery:
    settings = get_settings()
    broker = broker_url or settings.broker_url or "redis://127.0.0.1:6379/0"
    app = Celery("codecfleet", broker=broker, include=["tasks.experiment", "tasks.maintenance"])
    app.conf.update(
        task_queues=[Queue(q, EXCHANGE, routing_key=q) for q in QUEUES],
        task_default_queue="cpu",
        task_default_exchange=EXCHANGE.name,
        task_default_routing_key="cpu",
        task_routes=ROUTES,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Our tasks are idempotent and keep going; a broker blip must not cancel an encode.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reap-expired-leases": {
                "task": "codecfleet.maintenance.reap",
                "schedule": settings.reap_interval_seconds,
            },
        },
        timezone="UTC",
    )
    return app


app = make_app()


@signals.celeryd_after_setup.connect
def _add_private_queue(sender: str, instance, **_kwargs) -> None:
    """Every worker also consumes its own queue, so ``score`` can follow ``encode_decode``
    to the host that holds the bitstreams (DESIGN section 4)."""
    name = worker_queue(sender)
    instance.app.amqp.queues.select_add(Queue(name, EXCHANGE, routing_key=name))


@signals.worker_init.connect
def _warm_up_metric_kernels(**_kwargs) -> None:
    """In the worker's parent, before it forks its pool: compile or load the CPU metric
    kernels once, so no pool process pays for it on its first experiment."""
    from evaluation import fused_cpu

    fused_cpu.warm_up()


@signals.worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    """In each forked pool process: never reuse the parent's database connections,
    and, where ``CODECFLEET_TORCH_THREADS`` says so, cap torch's threads (its
    OpenMP pool is pathologically slow when several busy processes share the
    cores, e.g. two GPU workers' CPU-side metrics on a small host)."""
    from db import engine

    engine.dispose_after_fork()
    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)


def reconfigure() -> None:
    """Re-read the settings into the app (the broker URL and its options) and drop
    open broker connections; for a process whose environment changed (tests)."""
    from kombu import pools

    settings = get_settings()
    broker = settings.broker_url or "redis://127.0.0.1:6379/0"
    app.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout_seconds}
    app.conf.beat_schedule["reap-expired-leases"]["schedule"] = settings.reap_interval_seconds
    if app.conf.broker_url == broker:
        return
    if getattr(app, "_pool", None) is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    pools.reset()
    app.conf.broker_url = broker
