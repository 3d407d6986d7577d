"""The hostile battery: one candidate file per attack under ``hostile/``.

Each runs through the real pipeline (encode in one sandbox, container written
and re-read, decode in a fresh sandbox, scoring) with the strict sandbox. For
every attack: the result has a status, stage and reason; the canary appears in
no output (result, captured stdout/stderr, bitstreams); no file appears
outside the sandbox; no sandboxed process survives; this worker process keeps
its file descriptors; timeouts fire within their limit plus one second; and
cheats score no better than a codec that returns blank frames.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from _sandbox_testlib import (
    BLANK_CODEC,
    LOSSLESS_CODEC,
    TEST_LIMITS,
    load_hostile,
    open_fd_count,
    sandbox_pids,
    wait_until,
)
from evaluation.pipeline import measure_candidate, to_json
from sandbox.runner import SandboxRunner

#: attack -> (status, stage, reason pattern)
FAILING_ATTACKS: dict[str, tuple[str, str]] = {
    "net_tcp": ("encode", r"PermissionError.*Operation not permitted"),
    "net_dns": ("encode", r"gaierror|PermissionError"),
    "net_udp": ("encode", r"PermissionError.*Operation not permitted"),
    "read_canary_file": ("encode", r"FileNotFoundError"),
    "read_passwd": ("encode", r"/etc/passwd: FileNotFoundError"),
    "read_env": ("encode", r"environment: "),
    "write_outside": ("encode", r"RuntimeError: .*/usr/planted: OSError"),
    "fill_workdir": ("encode", r"No space left on device|File too large"),
    "fork": ("encode", r"PermissionError: \[Errno 1\] Operation not permitted"),
    "exec": ("encode", r"PermissionError: \[Errno 1\] Operation not permitted"),
    "subprocess_run": ("encode", r"PermissionError: \[Errno 1\] Operation not permitted"),
    "os_system": ("encode", r"os\.system returned (-1|32512)"),
    "multiprocessing_pool": ("encode", r"PermissionError|OSError"),
    "thread_bomb": ("encode", r"can't start new thread|MemoryError|did not finish within"),
    "memory_bomb": ("encode", r"MemoryError"),
    "endless_loop": ("encode", r"compress_video_frame\(frame 0\) did not finish within 2 s"),
    "sleep": ("decode", r"decompress_video_frame\(frame 0\) did not finish within 2 s"),
    "import_hang": ("import", r"importing the candidate did not finish within"),
    # 32512 is glibc's "the shell could not be started" (exit 127): no child was ever made.
    "ctypes_system": ("encode", r"libc\.system returned (-1|32512)"),
    "sys_exit": ("encode", r"SystemExit"),
    "os_exit": ("encode", r"exited with status 0 while compress_video_frame\(frame 0\)"),
    "segfault": ("encode", r"killed by SIGSEGV"),
    "stdout_flood": ("encode", r"wrote more than 65536 bytes to stdout"),
    "non_bytes": ("encode", r"returned str.*expected bytes"),
    "huge_return": ("encode", r"cap"),
    "empty_return": ("verify", r"shape \(0,\)"),
    "wrong_shape": ("verify", r"shape \(64, 48, 3\)"),
    "tamper_harness": ("import", r"1099511627776-byte unexpected b.B. message"),
}
TIMEOUT_ATTACKS = {"endless_loop", "sleep", "import_hang"}
CHEATS = ("cheat_read_source", "cheat_stash")

HOST_FILES_THAT_MUST_NOT_APPEAR = ("/tmp/fill", "/tmp/stash_0.npy", "/dev/shm/stash_0.npy", "/tmp/candidate.py")


@pytest.fixture
def attack_env(tmp_path, source_dir, canary, canary_env, tcp_listener, udp_listener):
    marker = tmp_path / "host-marker"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    values = {
        "TCP_PORT": str(tcp_listener.getsockname()[1]),
        "UDP_PORT": str(udp_listener.getsockname()[1]),
        "CANARY_PATH": str(source_dir / "canary.txt"),
        "SOURCE_CLIP": str(source_dir / "clip.mkv"),
        "SOURCE_DIR": str(source_dir),
        "ARTIFACT_DIR": str(artifacts),
        "HOST_MARKER": str(marker),
    }
    return {"values": values, "marker": marker, "artifacts": artifacts, "tcp": tcp_listener, "udp": udp_listener}


def _evaluate(code, clip, runner, artifacts):
    return measure_candidate(code, clip, [0.5], runner=runner, artifact_dir=artifacts, device="cpu")


def _assert_contained(result, runner, env, source_dir, canary, fds_before):
    # The canary is nowhere: not in the result, not in what the candidate printed, not in any bitstream.
    assert canary not in to_json(result)
    for log in runner.logs:
        assert canary.encode() not in log.stdout + log.stderr
    for path in env["artifacts"].rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes()
    # Nothing was written outside the sandbox.
    assert not env["marker"].exists()
    assert sorted(p.name for p in source_dir.iterdir()) == ["canary.txt", "clip.mkv"]
    planted = [p for p in env["artifacts"].rglob("*") if p.is_file() and p.suffix != ".cfbs"]
    assert planted == []
    for path in HOST_FILES_THAT_MUST_NOT_APPEAR:
        assert not Path(path).exists(), path
    # No connection or datagram reached the listeners on this machine's loopback.
    with pytest.raises(BlockingIOError):
        env["tcp"].accept()
    with pytest.raises(BlockingIOError):
        env["udp"].recvfrom(64)
    # No sandboxed process survives, and this worker keeps no leaked descriptors.
    tokens = [log.token for log in runner.logs]
    assert tokens
    assert wait_until(lambda: sandbox_pids(tokens) == [], timeout=3.0), sandbox_pids(tokens)
    assert wait_until(lambda: open_fd_count() <= fds_before, timeout=3.0)


@pytest.mark.parametrize("attack", sorted(FAILING_ATTACKS))
def test_attack_fails_with_stage_and_reason_and_leaves_nothing(attack, clip, runner, attack_env, source_dir, canary):
    stage, pattern = FAILING_ATTACKS[attack]
    if attack == "import_hang":
        runner = SandboxRunner(replace(TEST_LIMITS, import_seconds=2.0))
    code = load_hostile(attack, **attack_env["values"])
    fds_before = open_fd_count()
    result = _evaluate(code, clip, runner, attack_env["artifacts"])

    assert result["status"] == "failed"
    assert result["stage"] == stage, result["reason"]
    assert re.search(pattern, result["reason"]), result["reason"]
    assert result["isolation"] == "bubblewrap+seccomp+rlimits"
    if attack in TIMEOUT_ATTACKS:
        limit = 2.0
        fired = [log.timed_out_after for log in runner.logs if log.timed_out_after is not None]
        assert len(fired) == 1 and limit <= fired[0] <= limit + 1.0, fired
    if attack == "write_outside":
        assert "written" not in result["reason"]
    _assert_contained(result, runner, attack_env, source_dir, canary, fds_before)


def test_rewriting_the_clocks_does_not_change_the_measured_time(clip, runner, attack_env, source_dir, canary):
    fds_before = open_fd_count()
    result = _evaluate(load_hostile("tamper_time"), clip, runner, attack_env["artifacts"])

    assert result["status"] == "succeeded", result["reason"]
    row = result["rate_points"][0]
    # Each call sleeps 0.25 s; the trusted side's clock sees it, whatever the candidate did to its own.
    assert row["encode_seconds"] >= 0.25 * clip.n_frames
    assert row["decode_seconds"] >= 0.25 * clip.n_frames
    _assert_contained(result, runner, attack_env, source_dir, canary, fds_before)


@pytest.fixture(scope="module")
def blank_scores(clip, tmp_path_factory, strict_isolation):
    result = _evaluate(BLANK_CODEC, clip, SandboxRunner(TEST_LIMITS), tmp_path_factory.mktemp("blank"))
    assert result["status"] == "succeeded", result["reason"]
    return result["rate_points"][0]


@pytest.mark.parametrize("cheat", CHEATS)
def test_cheat_scores_no_better_than_blank_frames(cheat, clip, runner, attack_env, source_dir, canary, blank_scores):
    fds_before = open_fd_count()
    result = _evaluate(load_hostile(cheat, **attack_env["values"]), clip, runner, attack_env["artifacts"])

    assert result["status"] == "succeeded", result["reason"]
    row = result["rate_points"][0]
    for metric in ("psnr_rgb", "psnr_y", "ssim_y", "ms_ssim"):
        assert row[metric] <= blank_scores[metric] + 1e-9, (metric, row[metric], blank_scores[metric])
    _assert_contained(result, runner, attack_env, source_dir, canary, fds_before)


def test_worker_still_evaluates_an_honest_candidate_after_the_battery(clip, runner, tmp_path):
    fds_before = open_fd_count()
    result = _evaluate(LOSSLESS_CODEC, clip, runner, tmp_path)

    assert result["status"] == "succeeded", result["reason"]
    assert result["rate_points"][0]["psnr_capped_frames"] == clip.n_frames  # lossless: identical frames
    assert wait_until(lambda: open_fd_count() <= fds_before, timeout=3.0)
