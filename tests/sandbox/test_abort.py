"""SandboxRunner.abort(): another thread stops the sandbox now running."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from _sandbox_testlib import LOSSLESS_CODEC, TEST_LIMITS, open_fd_count, sandbox_pids, wait_until
from sandbox.runner import AbortedError, SandboxRunner

SLEEPING_CODEC = '''
import time


def compress_video_frame(frame, frame_index, config):
    time.sleep(60)
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unused")
'''

FRAMES = np.zeros((2, 16, 16, 3), np.uint8)
CONFIG = {"quality": 0.5, "width": 16, "height": 16, "fps": 30.0, "device": "cpu"}


def _my_sandboxes() -> list[int]:
    """Sandboxed processes started by this test process (their command line carries the token)."""
    return [pid for pid in sandbox_pids(["cf-sandbox-"]) if _is_descendant(pid, os.getpid())]


def _is_descendant(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == ancestor:
            return True
    return False


def test_abort_stops_a_running_call_within_a_second(strict_isolation):
    runner = SandboxRunner(replace(TEST_LIMITS, call_seconds=60.0, total_seconds=120.0))
    fds_before = open_fd_count()
    outcome: dict = {}

    def encode() -> None:
        t0 = time.monotonic()
        try:
            runner.encode(SLEEPING_CODEC, FRAMES, CONFIG)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["returned_at"] = time.monotonic()
        outcome["started_at"] = t0

    worker = threading.Thread(target=encode)
    worker.start()
    assert wait_until(lambda: _my_sandboxes() != [], timeout=10.0)
    aborted_at = time.monotonic()
    runner.abort("stopped by the test")
    worker.join(timeout=10.0)

    assert not worker.is_alive()
    assert isinstance(outcome["error"], AbortedError)
    assert outcome["error"].reason == "stopped by the test"
    assert outcome["returned_at"] - aborted_at < 1.0
    assert wait_until(lambda: sandbox_pids([log.token for log in runner.logs]) == [], timeout=3.0)
    assert wait_until(lambda: open_fd_count() <= fds_before, timeout=3.0)


def test_an_aborted_runner_refuses_later_calls_without_starting_a_sandbox(strict_isolation):
    runner = SandboxRunner(TEST_LIMITS)
    runner.abort("cancelled")

    with pytest.raises(AbortedError, match="cancelled") as err:
        runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    assert err.value.stage == "encode"
    assert runner.logs == []
    assert runner.aborted
