"""What a Celery worker does in its parent process before it forks its pool."""

from __future__ import annotations

from celery import signals

import tasks.app  # noqa: F401  (connects the worker signal handlers)
from evaluation import fused_cpu


def test_worker_init_warms_the_metric_kernels_before_the_pool_forks(monkeypatch):
    calls = []
    monkeypatch.setattr(fused_cpu, "warm_up", lambda: calls.append("warm_up"))
    signals.worker_init.send(sender=None)
    assert calls == ["warm_up"]


def test_warm_up_compiles_every_pairing_of_read_only_and_writable_frames():
    fused_cpu.warm_up()
    pairings = {(sig[0].mutable, sig[1].mutable) for sig in fused_cpu._rgb_pair_rows.signatures}
    assert pairings >= {(True, True), (True, False), (False, True), (False, False)}
    assert fused_cpu._ssim_rows.signatures and fused_cpu._pool_rows.signatures
