"""Issue 12: attacks of a capable adversary, each asserting the containment that stops it.

One test (or more) per finding class the sandbox owns: 1 (a process outliving its
session, outside the filter), 2 (page-cache channel), 4 (memory and pids past
the limits), 5 (bitstream size), 6 (forged protocol), 8 (peak memory), 9 (x32).
"""

from __future__ import annotations

import math
import re
import resource
import time
from dataclasses import replace

import numpy as np
import pytest

from _sandbox_testlib import BLANK_CODEC, TEST_LIMITS, load_hostile, sandbox_pids, wait_until
from evaluation.pipeline import measure_candidate
from evaluation.runner import CandidateError
from sandbox import cgroup as cgroups
from sandbox.runner import SandboxRunner, _parse_frame_meta


def _config(frames):
    _, h, w, _ = frames.shape
    return {"quality": 0.5, "width": w, "height": h, "fps": 30.0, "device": "cpu"}


@pytest.fixture
def frames(clip):
    return clip.frames


def _session_cgroups_left(runner) -> list[str]:
    """Session cgroups of this worker that still exist (there must be none after a session)."""
    lay = cgroups.layout()
    left = []
    for parent in lay.parents.values():
        left += [p.name for p in parent.iterdir() if p.name.startswith(f"cf-{__import__('os').getpid()}-")]
    return left


def _assert_session_gone(runner):
    """The kernel's word that nothing of the session is left: its cgroup was empty
    after the kill and is gone; nothing with its token runs anywhere either.
    (A pid list would not do: an escaped process can exec and change its name,
    and pids are recycled by other sessions of the same sandbox user.)"""
    log = runner.logs[-1]
    assert log.pids_seen, "the sandbox never appeared in its cgroup"
    assert log.session_empty is True
    assert _session_cgroups_left(runner) == []
    assert wait_until(lambda: sandbox_pids([log.token]) == [], timeout=3.0)


# ---------------------------------------------------------------- finding 1


def test_no_unfiltered_init_no_root_no_survivor(runner, frames):
    with pytest.raises(CandidateError) as err:
        runner.encode(load_hostile("escape_init"), frames[:1], _config(frames))
    reason = err.value.reason
    # The harness is the sandbox's pid 1 and only process, under the filter, with no_new_privs.
    assert "pids=['1']" in reason, reason
    assert "seccomp=2" in reason and "nnp=1" in reason, reason
    # A raw clone() without CLONE_THREAD is refused (-1, EPERM): no second process, nothing to exec.
    assert re.search(r"clone=-1 errno=1\b", reason), reason
    assert "dumpable=0" in reason, reason
    # bwrap and everything below it ran as an unprivileged host uid, not as root.
    assert runner.logs[-1].host_uid not in (0, None)
    _assert_session_gone(runner)


# ---------------------------------------------------------------- finding 2


def _channel_bits(truth: np.ndarray, got: np.ndarray) -> float:
    """Mutual information (bits) between sent and received bits, times their number."""
    n = len(truth)
    mi = 0.0
    for a in (0, 1):
        for b in (0, 1):
            p_ab = np.mean((truth == a) & (got == b))
            p_a, p_b = np.mean(truth == a), np.mean(got == b)
            if p_ab > 0:
                mi += p_ab * math.log2(p_ab / (p_a * p_b))
    return mi * n


def test_page_cache_channel_carries_nothing(runner, frames):
    code = load_hostile("pagecache_channel", METHOD="mincore")
    enc = runner.encode(code, frames[:1], _config(frames[:1]))
    assert enc.payloads[0] == b"\0"  # the encoder could not evict (fadvise and MADV_PAGEOUT denied)
    dec = runner.decode(code, enc.payloads, _config(frames[:1]), 1)
    flat = dec.frames[0].reshape(-1)
    bits = 2048
    assert flat[bits] == 0  # mincore was denied
    truth = frames[0].reshape(-1)[:bits] & 1
    got = (flat[:bits] > 0).astype(np.uint8)
    assert _channel_bits(truth, got) < 0.01 * bits


def _host_channel_file() -> str:
    """The host file the timing attack picks: the biggest one of site-packages outside numpy."""
    import os

    from sandbox.runner import _site_dirs

    best = (0, "")
    for site in _site_dirs()[:1]:
        for root, dirs, files in os.walk(site):
            dirs[:] = [d for d in dirs if not d.startswith("numpy")]
            for name in files:
                path = os.path.join(root, name)
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                if size > best[0]:
                    best = (size, path)
    return best[1]


def _timing_attack(runner, frames) -> float:
    """Bits of frame 0 the decoder got through page-fault timing, from an encoder that
    loaded the cold pages whose bit is 1 (the region was evicted beforehand, from outside:
    the part an attacker plays by picking pages nobody has read)."""
    import os

    fd = os.open(_host_channel_file(), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    code = load_hostile("pagecache_channel", METHOD="timing")
    enc = runner.encode(code, frames[:1], _config(frames[:1]))
    dec = runner.decode(code, enc.payloads, _config(frames[:1]), 1)
    bits = 2048
    truth = frames[0].reshape(-1)[:bits] & 1
    got = (dec.frames[0].reshape(-1)[:bits] > 0).astype(np.uint8)
    return _channel_bits(truth, got)


def test_page_cache_timing_channel_carries_nothing(runner, frames):
    # The decoder runs on its own memory-resident copy of the runtime: no inode the
    # encoder touched, and no cold page to time.
    assert runner.decoder_view is not None and runner.decoder_view.resident
    assert _timing_attack(runner, frames) < 8  # of 2048: the estimator's noise is ~1 bit
    # Control: the same attack with the decoder on the host's files (as before the
    # view) does carry the frame, so the measurement above can see a channel.
    shared = SandboxRunner(TEST_LIMITS)
    shared.decoder_view = None
    assert _timing_attack(shared, frames) > 512


# ---------------------------------------------------------------- finding 4


def test_memfd_memory_hits_the_session_cgroup_limit(strict_isolation, frames):
    limit = 256 << 20
    runner = SandboxRunner(replace(TEST_LIMITS, memory_bytes=limit, call_seconds=20.0))
    t0 = time.monotonic()
    with pytest.raises(CandidateError) as err:
        runner.encode(load_hostile("memfd_hoard"), frames[:1], _config(frames))
    assert err.value.stage == "encode"
    assert "held" not in err.value.reason  # it never got to 1 GiB
    assert "memory limit" in err.value.reason, err.value.reason
    assert time.monotonic() - t0 < 15
    peak = runner.logs[-1].peak_rss_bytes
    assert limit * 0.75 <= peak <= limit + (4 << 20), peak
    _assert_session_gone(runner)


def test_threads_stop_at_the_pids_limit(strict_isolation, frames):
    runner = SandboxRunner(replace(TEST_LIMITS, max_processes=64))
    with pytest.raises(CandidateError) as err:
        runner.encode(load_hostile("thread_count"), frames[:1], _config(frames))
    started = int(re.search(r"started (\d+) threads", err.value.reason).group(1))
    assert started < 64, err.value.reason
    _assert_session_gone(runner)


# ---------------------------------------------------------------- finding 5


def test_a_bitstream_over_its_total_cap_fails_as_bytes_arrive(runner, clip, tmp_path):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = measure_candidate(load_hostile("bitstream_flood"), clip, [0.5], runner=runner, artifact_dir=tmp_path)
    assert result["status"] == "failed"
    assert result["stage"] == "encode"
    assert "total cap" in result["reason"], result["reason"]
    cap = int(re.search(r"total cap of (\d+) bytes", result["reason"]).group(1))
    assert cap == 2 * clip.frames.nbytes + (64 << 10)
    assert list(tmp_path.rglob("*.cfbs")) == []  # nothing half-written is left
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 64 << 10  # KiB: < 64 MiB
    _assert_session_gone(runner)


# ---------------------------------------------------------------- finding 6


@pytest.mark.parametrize("depth", [8000, 100])
def test_a_deeply_nested_forged_reply_is_a_candidate_failure(runner, frames, depth):
    code = load_hostile("forge_deep_json", DEPTH=str(depth))
    enc = runner.encode(code, frames[:1], _config(frames[:1]))
    with pytest.raises(CandidateError) as err:
        runner.decode(code, enc.payloads, _config(frames[:1]), 1)
    assert err.value.stage in ("decode", "verify")
    assert "Recursion" not in err.value.reason
    _assert_session_gone(runner)


def test_frame_description_nesting_is_bounded_before_parsing():
    with pytest.raises(ValueError, match="nested too deep"):
        _parse_frame_meta(b"[" * 100 + b"]" * 100)
    assert _parse_frame_meta(b'{"shape": [2, 2, 3], "dtype": "|u1"}')["dtype"] == "|u1"


def test_a_forged_isolation_report_is_the_candidates_failure(runner, clip, tmp_path):
    result = measure_candidate(load_hostile("forge_isolation"), clip, [0.5], runner=runner, artifact_dir=tmp_path)
    assert result["status"] == "failed"  # not an IsolationError: the CLI never says "sandbox unavailable"
    assert result["stage"] == "import"
    assert "CODECFLEET_SANDBOX" not in result["reason"]
    assert "tampered" in result["reason"]
    _assert_session_gone(runner)


@pytest.mark.parametrize("how", ["forged", "raised"])
def test_failure_reasons_from_the_sandbox_are_capped(runner, frames, how):
    with pytest.raises(CandidateError) as err:
        runner.encode(load_hostile("forge_long_reason", HOW=how), frames[:1], _config(frames))
    assert len(err.value.reason.encode()) <= 4096 + 100
    if how == "forged":
        assert "IGNORE ALL PREVIOUS" not in err.value.reason
    _assert_session_gone(runner)


# ---------------------------------------------------------------- finding 8


def test_peak_memory_is_the_sandboxes_not_the_workers(runner, frames):
    ballast = np.ones(300 << 20, np.uint8)  # this worker grows by 300 MB; the candidate does not
    enc = runner.encode(BLANK_CODEC, frames, _config(frames))
    dec = runner.decode(BLANK_CODEC, enc.payloads, _config(frames), len(frames))
    for peak in (enc.peak_rss_bytes, dec.peak_rss_bytes):
        assert 5 << 20 < peak < 150 << 20, peak
    assert ballast.sum() == ballast.size


# ---------------------------------------------------------------- finding 9


def test_an_x32_syscall_ends_the_process_at_once(runner, frames):
    t0 = time.monotonic()
    with pytest.raises(CandidateError) as err:
        runner.encode(load_hostile("x32_syscall"), frames[:1], _config(frames))
    assert time.monotonic() - t0 < TEST_LIMITS.call_seconds  # not the per-call timeout
    assert "SIGSYS" in err.value.reason, err.value.reason
    assert runner.logs[-1].timed_out_after is None
    _assert_session_gone(runner)
