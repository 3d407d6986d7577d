"""SandboxRunner: isolation probing, named weaker modes, and that honest code
gives exactly what it gives in-process."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from _sandbox_testlib import LOSSLESS_CODEC, TEST_LIMITS
from evaluation.pipeline import measure_candidate
from evaluation.reference import REFERENCE_CANDIDATES
from evaluation.runner import CandidateError, InProcessRunner
from sandbox.runner import IsolationError, SandboxRunner, describe_mode, probe_isolation

#: Reference codecs do real work (overfit_nn trains at encode time, over 2 s a call on a
#: slow core): not the hang tests' 2 s per call.
REFERENCE_LIMITS = replace(TEST_LIMITS, call_seconds=60.0)

FORKING_CODEC = '''
import os

def compress_video_frame(frame, frame_index, config):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return b"forked"

def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unused")
'''

INTROSPECTING_CODEC = '''
import sys

def compress_video_frame(frame, frame_index, config):
    print("hello from the candidate")
    me = sys.modules[__name__]
    return f"{__name__}|{me.__file__}|{sorted(config)}".encode()

def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unused")
'''


def _config(frames: np.ndarray, quality: float = 0.5) -> dict:
    n, h, w, _ = frames.shape
    return {"quality": quality, "width": w, "height": h, "fps": 30.0, "device": "cpu"}


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    smooth = (base.astype(np.float32) * 0.3 + 90).astype(np.uint8)
    return np.stack([np.roll(smooth, 3 * i, axis=1) for i in range(3)])


def test_probe_finds_bubblewrap_and_seccomp_working(strict_isolation):
    assert strict_isolation.bwrap_ok
    assert strict_isolation.seccomp_ok
    assert strict_isolation.problems == []


def test_strict_mode_refuses_to_start_without_bubblewrap():
    with pytest.raises(IsolationError, match="refusing to run candidates.*bubblewrap"):
        SandboxRunner(TEST_LIMITS, bwrap="/nonexistent/bwrap")


def test_probe_without_bubblewrap_says_why():
    report = probe_isolation(bwrap="/nonexistent/bwrap")
    assert not report.strict_ok
    assert "bubblewrap (bwrap) is not installed" in report.problems


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown sandbox mode 'lax'"):
        SandboxRunner(TEST_LIMITS, mode="lax")


def test_strict_mode_says_which_layers_it_has(runner):
    assert runner.isolation == describe_mode("strict") == "bubblewrap+seccomp+rlimits"


def test_no_seccomp_mode_is_named_and_really_lacks_seccomp(strict_isolation, frames):
    runner = SandboxRunner(TEST_LIMITS, mode="no-seccomp")
    out = runner.encode(FORKING_CODEC, frames[:1], _config(frames))

    assert runner.isolation.startswith("WEAKER MODE 'no-seccomp'")
    assert out.payloads == [b"forked"]


def test_strict_mode_denies_the_same_fork(runner, frames):
    with pytest.raises(CandidateError) as err:
        runner.encode(FORKING_CODEC, frames[:1], _config(frames))
    assert err.value.stage == "encode"
    assert "PermissionError" in err.value.reason


def test_unsandboxed_mode_is_named_loudly(frames):
    runner = SandboxRunner(TEST_LIMITS, mode="unsandboxed")
    out = runner.encode(LOSSLESS_CODEC, frames[:1], _config(frames))

    assert runner.isolation.startswith("WEAKER MODE 'unsandboxed'")
    assert len(out.payloads) == 1


def test_candidate_is_imported_as_a_real_module_and_its_prints_are_captured(runner, frames):
    out = runner.encode(INTROSPECTING_CODEC, frames[:1], _config(frames))

    name, file, keys = out.payloads[0].decode().split("|")
    assert name == "candidate"
    assert file.endswith("candidate.py")
    assert keys == "['device', 'fps', 'height', 'quality', 'width']"
    assert runner.logs[-1].stdout == b"hello from the candidate\n"


def test_trusted_side_times_every_call_and_reads_peak_memory(runner, frames):
    enc = runner.encode(LOSSLESS_CODEC, frames, _config(frames))
    dec = runner.decode(LOSSLESS_CODEC, enc.payloads, _config(frames), len(frames))

    assert len(enc.frame_seconds) == len(dec.frame_seconds) == len(frames)
    assert all(s > 0 for s in enc.frame_seconds + dec.frame_seconds)
    assert enc.seconds == pytest.approx(sum(enc.frame_seconds))
    # The interpreter with numpy loaded is tens of MB; the kernel's figure, not the candidate's.
    assert enc.peak_rss_bytes > 10 << 20 and dec.peak_rss_bytes > 10 << 20
    assert np.array_equal(dec.frames, frames)


def test_decode_refuses_a_payload_count_that_does_not_match(runner, frames):
    with pytest.raises(CandidateError, match="bitstream holds 1 frames, expected 3") as err:
        runner.decode(LOSSLESS_CODEC, [b"x"], _config(frames), 3)
    assert err.value.stage == "verify"


@pytest.mark.parametrize("name", sorted(REFERENCE_CANDIDATES))
def test_reference_candidate_gives_identical_bytes_and_frames_in_the_sandbox(name, strict_isolation, frames):
    runner = SandboxRunner(REFERENCE_LIMITS)
    code = REFERENCE_CANDIDATES[name].read_text()
    config = _config(frames, quality=0.6)
    trusted = InProcessRunner()
    want_enc = trusted.encode(code, frames, dict(config))
    want_dec = trusted.decode(code, want_enc.payloads, dict(config), len(frames))

    got_enc = runner.encode(code, frames, dict(config))
    got_dec = runner.decode(code, got_enc.payloads, dict(config), len(frames))

    assert got_enc.payloads == want_enc.payloads
    assert np.array_equal(got_dec.frames, want_dec.frames)


@pytest.mark.parametrize("name", sorted(REFERENCE_CANDIDATES))
def test_reference_candidate_metrics_are_unchanged_by_isolation(name, strict_isolation, clip, tmp_path):
    runner = SandboxRunner(REFERENCE_LIMITS)
    code = REFERENCE_CANDIDATES[name].read_text()
    trusted = measure_candidate(code, clip, [0.3, 0.7], runner=InProcessRunner(), artifact_dir=tmp_path / "in")
    isolated = measure_candidate(code, clip, [0.3, 0.7], runner=runner, artifact_dir=tmp_path / "sb")

    assert trusted["status"] == isolated["status"] == "succeeded", isolated["reason"]
    assert isolated["isolation"] == "bubblewrap+seccomp+rlimits"
    for want, got in zip(trusted["rate_points"], isolated["rate_points"], strict=True):
        assert got["bitstream"] != want["bitstream"]
        assert got["bitstream_sha256"] == want["bitstream_sha256"]
        for metric in ("bytes", "kbps", "psnr_rgb", "psnr_y", "ssim_y", "ms_ssim"):
            assert got[metric] == pytest.approx(want[metric], abs=1e-6), metric
