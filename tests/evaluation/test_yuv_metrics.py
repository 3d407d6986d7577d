"""YUV 4:2:0 PSNR and PSNR-YUV: checked against FFmpeg's psnr filter (through PyAV) on real frames."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest

from evaluation import metrics, yuv
from evaluation.synthetic import synthetic_clip
from evaluation.video import read_video, write_video


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory):
    """A clip written to an mp4 with libx264 and read back (real decoded frames), and the same
    frames through a second, coarser x264 encode: a reference and a distorted video."""
    d = tmp_path_factory.mktemp("yuv")
    clip = synthetic_clip("mix", width=176, height=144, frames=4, seed=3)
    write_video(d / "ref.mp4", clip.frames, 25.0, codec="libx264", options={"crf": "10"}, pix_fmt="yuv420p")
    ref = read_video(d / "ref.mp4")
    write_video(d / "dist.mp4", ref.frames, 25.0, codec="libx264", options={"crf": "38"}, pix_fmt="yuv420p")
    dist = read_video(d / "dist.mp4")
    return ref.frames, dist.frames


def ffmpeg_psnr(ref: np.ndarray, dist: np.ndarray) -> list[dict]:
    """FFmpeg's psnr filter on the anchors' YUV 4:2:0 conversion of each frame pair."""
    h, w = ref.shape[1:3]
    graph = av.filter.Graph()
    main = graph.add_buffer(width=w, height=h, format="yuv420p", time_base=Fraction(1, 25), name="main")
    refin = graph.add_buffer(width=w, height=h, format="yuv420p", time_base=Fraction(1, 25), name="ref")
    psnr = graph.add("psnr")
    sink = graph.add("buffersink")
    main.link_to(psnr, 0, 0)
    refin.link_to(psnr, 0, 1)
    psnr.link_to(sink)
    graph.configure()
    out = []
    for i in range(ref.shape[0]):
        for src, frames in ((main, dist), (refin, ref)):
            f = yuv.to_yuv420_frame(frames[i])
            f.pts, f.time_base = i, Fraction(1, 25)
            src.push(f)
        meta = dict(sink.pull().metadata)
        out.append({k.rsplit(".", 1)[-1] if "psnr.psnr." in k else k: float(v) for k, v in meta.items() if "psnr.psnr." in k})
    return out


def test_plane_psnr_equals_ffmpeg_psnr_filter_on_real_frames(real_pair):
    ref, dist = real_pair
    scores = metrics.score_frames(ref, dist, device="cpu")
    ff = ffmpeg_psnr(ref, dist)
    assert scores.has_yuv
    for i, row in enumerate(ff):
        # FFmpeg prints 6 decimals.
        assert scores.psnr_y420[i] == pytest.approx(row["y"], abs=2e-6)
        assert scores.psnr_u[i] == pytest.approx(row["u"], abs=2e-6)
        assert scores.psnr_v[i] == pytest.approx(row["v"], abs=2e-6)
        assert scores.psnr_yuv[i] == pytest.approx((6 * row["y"] + row["u"] + row["v"]) / 8, abs=2e-6)
    # Chroma and luma really differ here, so the weighting is exercised.
    assert abs(scores.psnr_u[0] - scores.psnr_y420[0]) > 0.5


def test_psnr_yuv_summary_pools_each_plane_then_weights(real_pair):
    ref, dist = real_pair
    scores = metrics.score_frames(ref, dist, device="cpu")
    s = metrics.summarize(scores)
    assert s["psnr_yuv"] == pytest.approx(float(np.mean(scores.psnr_yuv)))
    pooled = [10 * math.log10(255**2 / float(np.mean(m))) for m in (scores.mse_y420, scores.mse_u, scores.mse_v)]
    assert s["psnr_yuv_pooled"] == pytest.approx((6 * pooled[0] + pooled[1] + pooled[2]) / 8)


def test_identical_frames_give_capped_yuv_psnr(real_pair):
    ref, _ = real_pair
    s = metrics.summarize(metrics.score_frames(ref, ref, device="cpu"))
    assert s["psnr_yuv"] == metrics.PSNR_CAP_DB and s["psnr_u"] == metrics.PSNR_CAP_DB


def test_odd_frames_have_no_yuv_numbers_but_keep_rgb():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (1, 33, 35, 3), dtype=np.uint8)
    s = metrics.summarize(metrics.score_frames(ref, ref[:, ::-1].copy(), device="cpu"))
    assert s["psnr_yuv"] is None and s["psnr_y"] is not None
    assert metrics.fitness_value(s, "psnr_yuv") is None


def test_fitness_value_of_each_metric():
    s = {"psnr_y": 30.0, "psnr_yuv": 31.0, "ssim_y": 0.99, "ms_ssim": 0.999}
    assert metrics.fitness_value(s, "psnr_y") == 30.0
    assert metrics.fitness_value(s, "psnr_yuv") == 31.0
    assert metrics.fitness_value(s, "ssim_y") == pytest.approx(20.0)
    assert metrics.fitness_value(s, "ms_ssim") == pytest.approx(30.0)
    with pytest.raises(metrics.MetricInputError, match="unknown fitness metric"):
        metrics.fitness_value(s, "vmaf")


def test_anchor_yuv_psnr_is_the_decoders_own_planes(tmp_path):
    from evaluation import anchors

    clip = synthetic_clip("mix", width=64, height=48, frames=2, seed=5)
    p = anchors.encode_anchor(clip, "x264", 30, device="cpu")
    assert p.psnr_yuv == pytest.approx((6 * p.psnr_y420 + p.psnr_u + p.psnr_v) / 8)
    assert 20 < p.psnr_y420 < 60 and p.psnr_u > 20
