"""Many sessions in one process, as a production worker runs them: nothing degrades.

A worker runs thousands of sessions in one process, so anything a session leaves
behind (descriptors, cgroup directories, threads, processes) or any per-process
state that changes under it (the scheduling policy of the calling thread: SVT-AV1,
run in-process for the AV1 anchors, switches the calling thread to SCHED_FIFO 99
when the worker is root) must not break the next session. These tests run normal,
failing, timed-out and aborted sessions back to back, then check that a normal
session still works and that nothing leaked; and that a failure to set the
sandbox up says what was being done and why (errno), not a bare
"Exception occurred in preexec_fn".
"""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from _sandbox_testlib import LOSSLESS_CODEC, TEST_LIMITS, load_hostile, open_fd_count, sandbox_pids, wait_until
from evaluation.runner import CandidateError
from sandbox import cgroup as cgroups
from sandbox.runner import AbortedError, IsolationError, SandboxRunner

FRAMES = np.random.default_rng(3).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
CONFIG = {"quality": 0.5, "width": 16, "height": 16, "fps": 30.0, "device": "cpu"}

SLEEPING_CODEC = '''
import time


def compress_video_frame(frame, frame_index, config):
    time.sleep(60)
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unused")
'''

#: Reports the scheduling policy and the cgroups the sandboxed process runs under.
SCHED_PROBE_CODEC = '''
import os


def compress_video_frame(frame, frame_index, config):
    return bytes([os.sched_getscheduler(0)])


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unused")
'''


def _my_cgroup_dirs() -> list[str]:
    """Session cgroup directories this test process created that still exist."""
    try:
        lay = cgroups.layout()
    except cgroups.CgroupError:
        return []
    prefix = f"cf-{os.getpid()}-"
    return sorted(str(p) for parent in lay.parents.values() for p in parent.iterdir() if p.name.startswith(prefix))


def _fds() -> dict[int, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


def _children() -> list[int]:
    """This process's live (or unreaped) children."""
    kids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
        except OSError:
            pass
    return kids


def _roundtrip(runner: SandboxRunner) -> None:
    enc = runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    payloads = list(enc.payloads)
    enc.payloads.close()  # the caller owns the spooled payloads' file
    dec = runner.decode(LOSSLESS_CODEC, payloads, CONFIG, len(FRAMES))
    assert np.array_equal(dec.frames, FRAMES)
    for log in runner.logs[-2:]:
        assert log.pids_seen, "the sandbox never appeared in its cgroup"
        assert log.session_empty is True


def _abort_after(delay: float) -> CandidateError:
    """An encode that another thread aborts ``delay`` seconds after it began."""
    runner = SandboxRunner(replace(TEST_LIMITS, call_seconds=60.0, total_seconds=120.0))
    outcome: dict = {}

    def encode() -> None:
        try:
            runner.encode(SLEEPING_CODEC, FRAMES, CONFIG)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    worker = threading.Thread(target=encode)
    worker.start()
    time.sleep(delay)
    runner.abort("stopped by the test")
    worker.join(timeout=15.0)
    assert not worker.is_alive()
    error = outcome.get("error")
    # Whenever the abort lands (before the process exists, at its start gate, or
    # mid-call), the caller hears that it was aborted, never an isolation failure.
    assert isinstance(error, AbortedError), repr(error)
    assert error.reason == "stopped by the test"
    for log in runner.logs:
        assert log.session_empty in (True, None)
    return error


def _run_as_realtime_thread(fn):
    """Run ``fn`` on a thread whose scheduling policy is SCHED_FIFO (as SVT-AV1 leaves it)."""
    outcome: dict = {}

    def body() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except PermissionError:
            outcome["skip"] = "cannot switch a thread to SCHED_FIFO here (needs root / CAP_SYS_NICE)"
            return
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    t = threading.Thread(target=body)
    t.start()
    t.join(timeout=60.0)
    assert not t.is_alive()
    if "skip" in outcome:
        pytest.skip(outcome["skip"])
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_session_started_from_a_realtime_thread_runs_normal_priority(strict_isolation):
    runner = SandboxRunner(TEST_LIMITS)
    enc = _run_as_realtime_thread(lambda: runner.encode(SCHED_PROBE_CODEC, FRAMES[:1], CONFIG))
    # The candidate never runs real-time, whatever the worker's thread was.
    assert enc.payloads[0] == bytes([os.SCHED_OTHER])
    assert runner.logs[-1].pids_seen and runner.logs[-1].session_empty is True
    assert _my_cgroup_dirs() == []


def test_many_sessions_in_one_process_leave_nothing_behind(strict_isolation):
    SandboxRunner(TEST_LIMITS)  # the probe and the stale sweep happen once, before the baseline
    fds_before = open_fd_count()
    threads_before = threading.active_count()
    children_before = set(_children())  # earlier tests' servers (redis, workers) are not ours
    dirs_before = _my_cgroup_dirs()
    assert dirs_before == []
    tokens: list[str] = []

    quick = replace(TEST_LIMITS, call_seconds=0.5)
    for round_ in range(3):
        runner = SandboxRunner(TEST_LIMITS)
        _roundtrip(runner)
        tokens += [log.token for log in runner.logs]

        # A session killed at its wall-clock limit.
        hang = SandboxRunner(quick)
        enc = hang.encode(LOSSLESS_CODEC, FRAMES[:1], CONFIG)
        payloads = list(enc.payloads)
        enc.payloads.close()
        with pytest.raises(CandidateError, match="wall-clock limit"):
            hang.decode(load_hostile("sleep"), payloads, CONFIG, 1)
        tokens += [log.token for log in hang.logs]

        # A candidate that exits under the worker's feet.
        gone = SandboxRunner(TEST_LIMITS)
        with pytest.raises(CandidateError):
            gone.encode(load_hostile("os_exit"), FRAMES, CONFIG)
        tokens += [log.token for log in gone.logs]

        # Aborts landing at every point of a session's life: before its process
        # exists, while it is held at the start gate, during import, mid-call.
        for delay in (0.0, 0.002, 0.01, 0.05, 0.3):
            _abort_after(delay)

        # The same, started from a real-time thread (as after an SVT-AV1 anchor).
        rt = SandboxRunner(TEST_LIMITS)
        _run_as_realtime_thread(lambda: _roundtrip(rt))
        tokens += [log.token for log in rt.logs]

        assert _my_cgroup_dirs() == [], f"session cgroups left after round {round_}"

    # A normal session still works after all of it ...
    runner = SandboxRunner(TEST_LIMITS)
    _roundtrip(runner)
    tokens += [log.token for log in runner.logs]

    # ... and nothing leaked: no cgroup directory, descriptor, thread or process.
    assert _my_cgroup_dirs() == []
    assert wait_until(lambda: open_fd_count() <= fds_before, timeout=3.0), f"{_fds()} vs {fds_before}"
    assert wait_until(lambda: threading.active_count() <= threads_before, timeout=3.0)
    assert wait_until(lambda: sandbox_pids(tokens) == [], timeout=3.0)
    assert wait_until(lambda: set(_children()) <= children_before, timeout=3.0), (_children(), children_before)


def test_a_cgroup_join_failure_says_what_and_why_and_leaves_nothing(strict_isolation, monkeypatch):
    runner = SandboxRunner(TEST_LIMITS)
    fds_before = open_fd_count()
    children_before = set(_children())

    def refuse(self, pid):
        raise cgroups.CgroupError(errno.EACCES, f"moving process {pid} into {self.name}/cgroup.procs failed: denied")

    monkeypatch.setattr(cgroups.SessionCgroup, "join", refuse)
    with pytest.raises(IsolationError) as err:
        runner.encode(LOSSLESS_CODEC, FRAMES, CONFIG)
    message = str(err.value)
    assert "the sandbox could not be set up: moving it into its session cgroup" in message, message
    assert "[Errno 13]" in message, message
    assert "preexec_fn" not in message
    # The process held at the gate never ran the sandbox, and is gone with its cgroup.
    log = runner.logs[-1]
    assert log.session_empty is True
    assert wait_until(lambda: sandbox_pids([log.token]) == [], timeout=3.0)
    monkeypatch.undo()
    assert _my_cgroup_dirs() == []
    assert wait_until(lambda: open_fd_count() <= fds_before, timeout=3.0)
    assert wait_until(lambda: set(_children()) <= children_before, timeout=3.0), (_children(), children_before)
    # and the next session is fine
    _roundtrip(runner)


def test_the_kernel_refusing_a_realtime_process_is_named(strict_isolation):
    """What used to surface as "Exception occurred in preexec_fn": EINVAL from a v1
    cpu cgroup without a real-time budget, for a process with SCHED_FIFO."""
    lay = cgroups.layout()
    if lay.version != 1 or "cpu" not in lay.parents:
        pytest.skip("only cgroup v1 cpu cgroups refuse real-time tasks this way")
    cg = cgroups.SessionCgroup(64 << 20, 16, 1.0)
    try:
        if not (cg.dirs["cpu"] / "cpu.rt_runtime_us").exists():
            pytest.skip("no real-time group scheduling in this kernel")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(w)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
                os.read(r, 1)
            finally:
                os._exit(0)
        os.close(r)
        try:
            assert wait_until(lambda: os.sched_getscheduler(pid) == os.SCHED_FIFO, timeout=3.0)
            with pytest.raises(cgroups.CgroupError) as err:
                cg.join(pid)
            assert err.value.errno == errno.EINVAL
            message = str(err.value)
            assert f"moving process {pid} into {cg.dirs['cpu'] / 'cgroup.procs'} failed" in message, message
            assert "real-time" in message, message
        finally:
            os.close(w)
            os.waitpid(pid, 0)
    finally:
        cg.kill()
        cg.remove()
    assert _my_cgroup_dirs() == []
