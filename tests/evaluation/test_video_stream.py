"""Streaming reads (``VideoStream``) and ``codecfleet metrics`` without whole clips in memory."""

from __future__ import annotations

import argparse
import hashlib
import json
import tracemalloc

import numpy as np
import pytest

from evaluation import metrics
from evaluation.synthetic import synthetic_clip
from evaluation.clip import VideoError
from evaluation.video import STREAM_HASH_VERSION, VideoStream, read_video, write_video


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    clip = synthetic_clip("mix", width=160, height=96, frames=30, seed=2)
    write_video(d / "ref.mkv", clip.frames, clip.fps)
    write_video(d / "dist.mp4", clip.frames, clip.fps, codec="libx264", options={"crf": "30"}, pix_fmt="yuv420p")
    return d / "ref.mkv", d / "dist.mp4"


def test_batches_are_the_frames_read_video_gives_and_the_hash_is_versioned(pair):
    ref, _ = pair
    whole = read_video(ref)
    stream = VideoStream(ref)
    got = np.concatenate(list(stream.batches(7)))
    assert np.array_equal(got, whole.frames) and stream.n_frames == 30
    digest = hashlib.sha256(memoryview(whole.frames).cast("B"))
    digest.update(b"\n30x96x160x3:uint8")
    assert stream.sha256 == digest.hexdigest() != whole.sha256
    assert STREAM_HASH_VERSION == "cf-stream-sha256-1"


def test_max_frames_and_errors(pair, tmp_path):
    ref, _ = pair
    s = VideoStream(ref, max_frames=5)
    assert sum(b.shape[0] for b in s.batches(2)) == 5
    (tmp_path / "x.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="not a video"):
        VideoStream(tmp_path / "x.mp4")


def test_streamed_scores_equal_whole_clip_scores(pair):
    ref, dist = pair
    a, b = read_video(ref), read_video(dist)
    whole = metrics.summarize(metrics.score_frames(a.frames, b.frames, device="cpu"))
    parts = [metrics.score_frames(x, y, device="cpu")
             for x, y in zip(VideoStream(ref).batches(8), VideoStream(dist).batches(8))]
    streamed = metrics.summarize(metrics.concat_scores(parts))
    for k, v in whole.items():
        assert streamed[k] == pytest.approx(v, rel=1e-12), k


def test_codecfleet_metrics_never_holds_a_whole_video(pair, capsys, monkeypatch):
    from codecfleet import cli

    ref, dist = pair
    one_video = 30 * 96 * 160 * 3
    args = argparse.Namespace(reference=str(ref), distorted=str(dist), frames=None, device="cpu", json=True)
    cli.cmd_metrics(args)  # warm up imports and numba
    capsys.readouterr()
    monkeypatch.setattr(cli, "METRICS_BATCH_FRAMES", 4)
    tracemalloc.start()
    try:
        cli.cmd_metrics(args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 30 and out["reference"]["hash"] == STREAM_HASH_VERSION
    assert out["psnr_yuv"] is not None
    # Both whole videos would be 2 x one_video; streaming holds a few 4-frame batches.
    assert peak < one_video, (peak, one_video)


def test_codecfleet_metrics_reports_differing_frame_counts(pair, tmp_path):
    from codecfleet import cli

    ref, _ = pair
    short = tmp_path / "short.mkv"
    write_video(short, read_video(ref, max_frames=20).frames, 25.0)
    args = argparse.Namespace(reference=str(ref), distorted=str(short), frames=None, device="cpu", json=True)
    with pytest.raises(cli.UsageError, match="frame counts differ: .* has 30, .* has 20"):
        cli.cmd_metrics(args)
