"""The encode/decode path never holds a whole decoded clip: the decoder's frames are
scored and hashed as they arrive (evaluation.pipeline.DecodedStream, the runners'
``on_frame``), with the same numbers as scoring the whole clip at once."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from evaluation import metrics, pipeline
from evaluation.pipeline import DecodedStream, frames_digest, measure_rate_point, verify_determinism
from evaluation.runner import CandidateError, InProcessRunner
from evaluation.synthetic import synthetic_clip

RAW = '''
import numpy as np

def compress_video_frame(frame, frame_index, config):
    q = max(1, int(round(64 * (1.0 - config["quality"]))))
    return (frame // q * q).tobytes()

def decompress_video_frame(compressed_data, frame_index, config):
    return np.frombuffer(compressed_data, dtype=np.uint8).reshape(config["height"], config["width"], 3).copy()
'''


def test_streamed_scores_and_digests_equal_the_whole_clip_ones(monkeypatch):
    ref = synthetic_clip("mix", width=96, height=64, frames=11, seed=5).frames
    dist = np.clip(ref.astype(np.int16) + np.random.default_rng(1).integers(-6, 7, ref.shape), 0, 255).astype(np.uint8)
    monkeypatch.setattr(pipeline, "STREAM_BATCH_FRAMES", 3)  # batches of 3, 3, 3, 2
    stream = DecodedStream(ref, device="cpu")
    for i in range(len(dist)):
        stream(i, dist[i].copy())
    scores, digest, per_frame = stream.finish()
    whole = metrics.score_frames(ref, dist, device="cpu")
    for name in ("psnr_rgb", "psnr_y", "ssim_y", "ms_ssim", "mse_rgb", "mse_y", "mse_y420", "mse_u", "mse_v"):
        np.testing.assert_array_equal(getattr(scores, name), getattr(whole, name), err_msg=name)
    assert metrics.summarize(scores) == metrics.summarize(whole)
    assert (digest, per_frame) == frames_digest(dist)


def test_streamed_frames_must_arrive_in_order_and_all_of_them():
    ref = synthetic_clip("pan", width=32, height=32, frames=3, seed=1).frames
    stream = DecodedStream(ref, device="cpu")
    stream(0, ref[0])
    with pytest.raises(CandidateError, match="arrived as frame 2, expected frame 1"):
        stream(2, ref[2])
    short = DecodedStream(ref, device="cpu")
    short(0, ref[0])
    with pytest.raises(CandidateError, match="returned 1 frames, expected 3"):
        short.finish()


class _WholeClipRunner:
    """A runner without ``on_frame``: the pipeline's fallback, holding the decoded clip (the old way)."""

    def __init__(self, runner):
        self._runner = runner
        self.isolation = runner.isolation

    def encode(self, code, frames, config):
        return self._runner.encode(code, frames, config)

    def decode(self, code, payloads, config, n_frames):
        return self._runner.decode(code, payloads, config, n_frames)


def _traced_peak(runner, clip, tmp_path, name):
    run_dir = tmp_path / name
    run_dir.mkdir()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        row, decoded = measure_rate_point(RAW, clip, 0, 0.5, runner=runner, run_dir=run_dir, device="cpu")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert decoded is None
    return row, peak


def test_a_long_sandboxed_decode_keeps_the_trusted_side_memory_bounded(tmp_path):
    """The trusted side's traced memory while encoding, writing, decoding, scoring and
    hashing a rate point does not grow with the clip's length: 400 frames peak about
    where 100 do (the constant part is the container's 1 MiB re-read chunks and one
    batch of frames). The old whole-clip way (a runner without on_frame) grows by more
    than the added decoded frames, so this check can fail. (The in-process runner, for
    trusted code, keeps its encoder's payloads in a list; the sandbox spools them.)"""
    from sandbox.runner import SandboxRunner

    runner = SandboxRunner()
    clips = {n: synthetic_clip("mix", width=96, height=64, frames=n, seed=3) for n in (100, 400)}
    peaks, whole, rows = {}, {}, {}
    for n, clip in clips.items():
        rows[n], peaks[n] = _traced_peak(runner, clip, tmp_path, f"stream{n}")
        whole_row, whole[n] = _traced_peak(_WholeClipRunner(runner), clip, tmp_path, f"whole{n}")
        for key in ("psnr_y", "psnr_yuv", "ssim_y", "ms_ssim", "decoded_sha256", "bytes"):
            assert rows[n][key] == whole_row[key], key  # the same numbers both ways
        assert rows[n]["per_frame"]["psnr_y"] == whole_row["per_frame"]["psnr_y"]
    added = clips[400].frames.nbytes - clips[100].frames.nbytes  # 300 decoded frames: 5.5 MB
    print(f"sandbox: traced peak streamed {peaks}, whole-clip {whole}; 300 more frames are {added} bytes")
    assert peaks[400] - peaks[100] < added / 10, (peaks, added)
    assert peaks[400] < clips[400].frames.nbytes / 2, peaks
    assert whole[400] - whole[100] > added, (whole, added)


def test_the_determinism_re_decode_streams_too(tmp_path):
    clip = synthetic_clip("mix", width=96, height=64, frames=6, seed=3)
    runner = InProcessRunner()
    row, _ = measure_rate_point(RAW, clip, 0, 0.5, runner=runner, run_dir=tmp_path, device="cpu")
    seen = []

    class Spy(InProcessRunner):
        def decode(self, code, payloads, config, n_frames, *, on_frame=None):
            seen.append(on_frame is not None)
            return super().decode(code, payloads, config, n_frames, on_frame=on_frame)

    record = verify_determinism(RAW, clip, [row], runner=Spy(), device="cpu", mode="every")
    assert record["identical"] is True and seen == [True]
