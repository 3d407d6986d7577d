"""Specification of evaluation.metrics: agreement with scikit-image, capping, pooling, rate."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evaluation import fused_cpu, metrics
from evaluation.metrics import (
    PSNR_CAP_DB,
    FrameScores,
    MetricInputError,
    ms_ssim_luma,
    ms_ssim_scales,
    mse_per_frame,
    psnr_from_mse,
    psnr_rgb,
    psnr_y,
    rate_stats,
    resolve_device,
    rgb_to_y,
    score_frames,
    ssim_luma,
    ssim_y,
    summarize,
)

QCIF = (144, 176)
CIF = (288, 352)


@pytest.fixture(autouse=True, params=["fused", "torch"])
def cpu_backend(request, monkeypatch):
    """Every test here runs twice: with the fused CPU kernels and with the torch code CUDA runs."""
    monkeypatch.setattr(metrics, "_CPU_BACKEND", request.param)
    return request.param


def skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range
    )


def textured_frames(n: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth colour gradients, a moving sinusoidal texture and sensor-like noise."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for t in range(n):
        base = 60 + 120 * (xx / w) + 40 * np.sin((xx + 3 * t) / 7.0) * np.cos(yy / 5.0)
        rgb = np.stack([base + 25, base, 0.6 * base + 30 * (yy / h)], axis=-1)
        frames.append(rgb + rng.normal(0, 6, rgb.shape))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def add_noise(frames: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)


def x264_round_trip(frames: np.ndarray, path: Path, crf: int) -> np.ndarray:
    """Encode with PyAV's libx264 and decode back to RGB: real codec distortion."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(decoded)


def reference_ms_ssim(y_ref: np.ndarray, y_dist: np.ndarray, scales: int) -> float:
    """Straightforward float64 MS-SSIM from the same pieces scikit-image uses.

    scipy gaussian_filter (sigma 1.5, truncate 3.5, reflect), crop 5 per side,
    mean cs at scales 1..M-1 and mean SSIM at scale M, 2x2 block means between
    scales, weights renormalised, negatives clamped to 0.
    """
    weights = np.array(metrics.MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = y_ref.astype(np.float64), y_dist.astype(np.float64)
    values = []
    for j in range(scales):
        if j:
            h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

        def filt(v):
            return gaussian_filter(v, sigma=1.5, truncate=3.5, mode="reflect")

        ux, uy = filt(x), filt(y)
        vx, vy, vxy = filt(x * x) - ux * ux, filt(y * y) - uy * uy, filt(x * y) - ux * uy
        cs = (2 * vxy + c2) / (vx + vy + c2)
        lum = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1)
        crop = (slice(5, -5), slice(5, -5))
        values.append((lum * cs)[crop].mean() if j == scales - 1 else cs[crop].mean())
    return float(np.prod(np.maximum(values, 0.0) ** weights))


# --------------------------------------------------------------------------- #
# Agreement with scikit-image
# --------------------------------------------------------------------------- #


def test_psnr_rgb_equals_skimage_on_random_frames():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (3, *QCIF, 3), dtype=np.uint8)
    dist = rng.integers(0, 256, (3, *QCIF, 3), dtype=np.uint8)
    expected = [peak_signal_noise_ratio(r, d, data_range=255) for r, d in zip(ref, dist)]
    np.testing.assert_allclose(psnr_rgb(ref, dist, device="cpu"), expected, rtol=0, atol=1e-6)


def test_psnr_y_equals_skimage_on_bt709_luma():
    ref = textured_frames(3, QCIF, seed=1)
    dist = add_noise(ref, 4.0, seed=2)
    expected = [peak_signal_noise_ratio(rgb_to_y(r), rgb_to_y(d), data_range=255) for r, d in zip(ref, dist)]
    np.testing.assert_allclose(psnr_y(ref, dist, device="cpu"), expected, rtol=0, atol=1e-6)


def test_ssim_y_equals_skimage_gaussian_ssim_on_random_frames():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 256, (3, *QCIF, 3), dtype=np.uint8)
    dist = add_noise(ref, 20.0, seed=4)
    expected = [skimage_ssim(rgb_to_y(r), rgb_to_y(d)) for r, d in zip(ref, dist)]
    np.testing.assert_allclose(ssim_y(ref, dist, device="cpu"), expected, rtol=0, atol=1e-4)


def test_all_metrics_equal_skimage_on_libx264_decoded_frames(tmp_path):
    ref = textured_frames(5, CIF, seed=5)
    dist = x264_round_trip(ref, tmp_path / "clip.mp4", crf=32)
    assert dist.shape == ref.shape and not np.array_equal(dist, ref)

    scores = score_frames(ref, dist, device="cpu")

    for i, (r, d) in enumerate(zip(ref, dist)):
        yr, yd = rgb_to_y(r), rgb_to_y(d)
        assert scores.psnr_rgb[i] == pytest.approx(peak_signal_noise_ratio(r, d, data_range=255), abs=1e-6)
        assert scores.psnr_y[i] == pytest.approx(peak_signal_noise_ratio(yr, yd, data_range=255), abs=1e-6)
        assert scores.ssim_y[i] == pytest.approx(skimage_ssim(yr, yd), abs=1e-4)
        assert scores.ms_ssim[i] == pytest.approx(reference_ms_ssim(yr, yd, scales=5), abs=1e-4)


def test_ssim_stays_within_tolerance_on_bright_flat_content():
    # Near-white flat areas are where E[x^2] - E[x]^2 cancels worst in float32.
    rng = np.random.default_rng(6)
    ref = np.clip(250 + rng.normal(0, 1.0, (2, *QCIF)), 0, 255)
    dist = np.clip(ref + rng.normal(0, 0.5, ref.shape), 0, 255)
    expected = [skimage_ssim(r, d) for r, d in zip(ref, dist)]
    np.testing.assert_allclose(ssim_luma(ref, dist, device="cpu"), expected, rtol=0, atol=1e-4)


def test_ssim_luma_honours_data_range_on_unit_float_planes():
    rng = np.random.default_rng(7)
    ref = rng.random((2, 40, 50))
    dist = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1)
    expected = [skimage_ssim(r, d, data_range=1.0) for r, d in zip(ref, dist)]
    np.testing.assert_allclose(ssim_luma(ref, dist, data_range=1.0, device="cpu"), expected, atol=1e-4)


def test_results_do_not_depend_on_how_frames_are_batched(monkeypatch):
    ref = textured_frames(4, QCIF, seed=8)
    dist = add_noise(ref, 8.0, seed=9)
    together = score_frames(ref, dist, device="cpu")
    monkeypatch.setattr(metrics, "_CPU_BATCH_PIXELS", 1)  # one frame per batch
    one_by_one = score_frames(ref, dist, device="cpu")
    for field in ("psnr_rgb", "psnr_y", "mse_rgb", "mse_y"):
        np.testing.assert_array_equal(getattr(one_by_one, field), getattr(together, field))
    np.testing.assert_allclose(one_by_one.ssim_y, together.ssim_y, atol=1e-7)
    np.testing.assert_allclose(one_by_one.ms_ssim, together.ms_ssim, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_and_cpu_agree():
    ref = textured_frames(3, CIF, seed=10)
    dist = add_noise(ref, 5.0, seed=11)
    cpu, gpu = score_frames(ref, dist, device="cpu"), score_frames(ref, dist, device="cuda")
    np.testing.assert_allclose(gpu.psnr_rgb, cpu.psnr_rgb, atol=1e-9)
    np.testing.assert_allclose(gpu.ssim_y, cpu.ssim_y, atol=1e-5)
    np.testing.assert_allclose(gpu.ms_ssim, cpu.ms_ssim, atol=1e-5)


# --------------------------------------------------------------------------- #
# Capping and pooling
# --------------------------------------------------------------------------- #


def test_identical_frames_score_the_cap_and_are_counted():
    ref = textured_frames(3, QCIF, seed=12)
    dist = ref.copy()
    dist[1] = add_noise(ref[1:2], 3.0, seed=13)[0]

    scores = score_frames(ref, dist, device="cpu")

    assert scores.psnr_rgb[[0, 2]].tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]
    assert scores.psnr_y[[0, 2]].tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]
    assert scores.psnr_rgb[1] < 50
    assert scores.psnr_capped == 2
    assert scores.ssim_y[0] == pytest.approx(1.0, abs=1e-6)
    assert summarize(scores)["psnr_capped_frames"] == 2


def test_psnr_above_the_cap_is_capped_and_counted():
    psnr, capped = psnr_from_mse([1e-20, 0.0, 65025.0 / 1e9])
    assert psnr.tolist() == [PSNR_CAP_DB, PSNR_CAP_DB, pytest.approx(90.0)]
    assert capped == 2


def test_pooled_psnr_weighs_the_worst_frame_more_than_the_mean_of_db():
    ref = textured_frames(2, QCIF, seed=14)
    dist = np.stack([add_noise(ref[:1], 1.0, seed=15)[0], add_noise(ref[1:], 25.0, seed=16)[0]])

    scores = score_frames(ref, dist, device="cpu")
    summary = summarize(scores)

    expected_pooled = 10 * math.log10(255**2 / scores.mse_rgb.mean())
    assert summary["psnr_rgb_pooled"] == pytest.approx(expected_pooled, abs=1e-9)
    assert summary["psnr_rgb"] == pytest.approx(scores.psnr_rgb.mean(), abs=1e-12)
    assert summary["psnr_rgb_pooled"] < summary["psnr_rgb"] - 3.0  # Jensen: far apart here
    assert summary["psnr_y_pooled"] < summary["psnr_y"]


def test_pooled_psnr_of_an_identical_clip_is_the_cap_not_inf():
    ref = textured_frames(2, QCIF, seed=17)
    summary = summarize(score_frames(ref, ref.copy(), device="cpu"))
    assert summary["psnr_rgb_pooled"] == PSNR_CAP_DB
    assert summary["psnr_y_pooled"] == PSNR_CAP_DB
    assert all(math.isfinite(v) for v in summary.values())


def test_summary_holds_plain_python_numbers():
    ref = textured_frames(2, QCIF, seed=18)
    summary = summarize(score_frames(ref, add_noise(ref, 5.0, seed=19), device="cpu"))
    assert set(summary) == {
        "psnr_rgb", "psnr_y", "psnr_rgb_pooled", "psnr_y_pooled",
        "ssim_y", "ms_ssim", "ms_ssim_scales", "psnr_capped_frames",
        "psnr_y420", "psnr_u", "psnr_v", "psnr_yuv",
        "psnr_y420_pooled", "psnr_u_pooled", "psnr_v_pooled", "psnr_yuv_pooled",
    }  # fmt: skip
    assert all(type(summary[k]) is float for k in summary if k not in ("ms_ssim_scales", "psnr_capped_frames"))
    assert type(summary["ms_ssim_scales"]) is int and summary["ms_ssim_scales"] == 4
    assert type(summary["psnr_capped_frames"]) is int


def test_summary_reports_no_ms_ssim_when_it_was_not_computed():
    ref = textured_frames(1, QCIF, seed=20)
    scores = score_frames(ref, add_noise(ref, 5.0, seed=21), device="cpu", ms_ssim=False)
    assert scores.ms_ssim_scales == 0 and np.isnan(scores.ms_ssim).all()
    summary = summarize(scores)
    assert summary["ms_ssim"] is None and summary["ms_ssim_scales"] == 0


# --------------------------------------------------------------------------- #
# MS-SSIM
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("size", "scales"), [(CIF, 5), (QCIF, 4), ((45, 61), 3)])
def test_ms_ssim_equals_a_straightforward_reference(size, scales):
    ref = rgb_to_y(textured_frames(2, size, seed=22))
    dist = rgb_to_y(add_noise(textured_frames(2, size, seed=22), 10.0, seed=23))
    values, used = ms_ssim_luma(ref, dist, device="cpu")
    assert used == scales
    expected = [reference_ms_ssim(r, d, scales) for r, d in zip(ref, dist)]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-5)


def test_ms_ssim_scale_count_follows_frame_size():
    assert ms_ssim_scales(*CIF) == 5
    assert ms_ssim_scales(*QCIF) == 4  # 144 -> 72 -> 36 -> 18 -> 9 < 11
    assert ms_ssim_scales(21, 500) == 1
    assert ms_ssim_scales(10, 500) == 0
    assert ms_ssim_scales(1080, 1920, max_scales=3) == 3


def test_ms_ssim_of_identical_frames_is_one():
    ref = textured_frames(2, CIF, seed=24)
    values, _ = metrics.ms_ssim_y(ref, ref.copy(), device="cpu")
    np.testing.assert_allclose(values, 1.0, atol=1e-6)


def test_ms_ssim_and_ssim_fall_as_noise_grows():
    ref = textured_frames(1, CIF, seed=25)
    noisy = [add_noise(ref, sigma, seed=26) for sigma in (2.0, 8.0, 20.0, 40.0)]
    ms = [metrics.ms_ssim_y(ref, d, device="cpu")[0][0] for d in noisy]
    ss = [ssim_y(ref, d, device="cpu")[0] for d in noisy]
    assert ms == sorted(ms, reverse=True) and ms[0] > ms[-1] + 0.05
    assert ss == sorted(ss, reverse=True)


def test_ms_ssim_of_inverted_content_is_clamped_not_nan():
    ref = textured_frames(1, CIF, seed=27)
    values, _ = metrics.ms_ssim_y(ref, 255 - ref, device="cpu")
    assert np.isfinite(values).all() and 0.0 <= values[0] < 0.2


# --------------------------------------------------------------------------- #
# Colour, devices and input validation
# --------------------------------------------------------------------------- #


def test_rgb_to_y_uses_bt709_full_range_weights():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    expected = [0.2126 * 255, 0.7152 * 255, 0.0722 * 255, 0.2126 * 10 + 0.7152 * 20 + 0.0722 * 30]
    np.testing.assert_allclose(rgb_to_y(rgb)[0], expected, rtol=1e-15)
    assert rgb_to_y(rgb).dtype == np.float64
    as_torch = rgb_to_y(torch.from_numpy(rgb))
    assert as_torch.dtype == torch.float32
    np.testing.assert_allclose(as_torch.numpy()[0], expected, rtol=1e-6)


def test_auto_device_is_cuda_exactly_when_torch_sees_one():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_asking_for_cuda_without_one_is_an_error():
    with pytest.raises(MetricInputError, match="no CUDA"):
        resolve_device("cuda")


@pytest.mark.parametrize(
    ("ref", "dist", "message"),
    [
        (np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 32, 30, 3), np.uint8), "differ in shape"),
        (np.zeros((2, 32, 32, 3), np.uint8), np.zeros((3, 32, 32, 3), np.uint8), "differ in shape"),
        (np.zeros((2, 32, 32, 3), np.float32), np.zeros((2, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 32, 32, 3), np.uint16), "uint8"),
        (np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0, 32, 32, 3), np.uint8), "N = 0"),
        (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8), r"\(N, H, W, 3\)"),
        (np.zeros((2, 32, 32, 4), np.uint8), np.zeros((2, 32, 32, 4), np.uint8), r"\(N, H, W, 3\)"),
        (np.zeros((2, 8, 32, 3), np.uint8), np.zeros((2, 8, 32, 3), np.uint8), "too small"),
        ([[0]], np.zeros((2, 32, 32, 3), np.uint8), "numpy array"),
    ],
)
def test_score_frames_rejects_bad_input_with_a_clear_message(ref, dist, message):
    with pytest.raises(MetricInputError, match=message):
        score_frames(ref, dist, device="cpu")


def test_metric_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        psnr_rgb(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 5, 3), np.uint8))


def test_summarize_refuses_scores_without_psnr():
    ref = textured_frames(1, QCIF, seed=28)
    scores = score_frames(ref, ref.copy(), device="cpu", psnr=False)
    assert isinstance(scores, FrameScores) and np.isnan(scores.psnr_rgb).all()
    with pytest.raises(MetricInputError, match="NaN"):
        summarize(scores)


# --------------------------------------------------------------------------- #
# Rate
# --------------------------------------------------------------------------- #


def test_rate_stats_arithmetic():
    stats = rate_stats(n_bytes=1000, n_frames=10, width=176, height=144, fps=25.0)
    assert stats["bits"] == 8000
    assert stats["kbps"] == pytest.approx(8000 * 25 / 10 / 1000)  # 20 kbps
    assert stats["bpp"] == pytest.approx(8000 / (10 * 176 * 144))
    assert stats["compression_ratio"] == pytest.approx(10 * 176 * 144 * 3 / 1000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_bytes": 0}, "n_bytes must be positive"),
        ({"n_frames": 0}, "n_frames must be positive"),
        ({"width": -4}, "width must be positive"),
        ({"height": 1.5}, "height must be an integer"),
        ({"fps": 0.0}, "fps must be positive"),
        ({"fps": float("nan")}, "fps must be positive"),
    ],
)
def test_rate_stats_rejects_impossible_arguments(kwargs, message):
    args = {"n_bytes": 100, "n_frames": 2, "width": 16, "height": 16, "fps": 30.0, **kwargs}
    with pytest.raises(MetricInputError, match=message):
        rate_stats(**args)


def test_ssim_and_ms_ssim_do_not_depend_on_the_cpu_strip_height(monkeypatch):
    # CIF's 278 valid rows in strips of 40: six full strips and a partial one.
    ref = textured_frames(2, CIF, seed=20)
    dist = add_noise(ref, 10.0, seed=21)
    whole = score_frames(ref, dist, device="cpu")
    monkeypatch.setattr(metrics, "_CPU_STRIP_ROWS", 40)
    monkeypatch.setattr(fused_cpu, "STRIP_ROWS", 40)
    strips = score_frames(ref, dist, device="cpu")
    np.testing.assert_allclose(strips.ssim_y, whole.ssim_y, rtol=0, atol=1e-7)
    np.testing.assert_allclose(strips.ms_ssim, whole.ms_ssim, rtol=0, atol=1e-7)
    expected = [skimage_ssim(rgb_to_y(r), rgb_to_y(d)) for r, d in zip(ref, dist)]
    np.testing.assert_allclose(strips.ssim_y, expected, rtol=0, atol=1e-4)


def test_ssim_equals_skimage_on_planes_barely_larger_than_the_window():
    # 13 rows leave 3 valid rows per plane; in the stacked vertical filter most
    # output rows are the ones dropped at plane boundaries.
    rng = np.random.default_rng(22)
    ref = rng.uniform(0, 255, (13, 29))
    dist = np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255)
    assert ssim_luma(ref, dist, device="cpu")[0] == pytest.approx(skimage_ssim(ref, dist), abs=1e-4)


def test_fused_results_do_not_depend_on_the_thread_count(cpu_backend):
    if cpu_backend != "fused":
        pytest.skip("thread-count independence is a property of the fused kernels")
    ref = textured_frames(3, CIF, seed=23)
    dist = add_noise(ref, 6.0, seed=24)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = score_frames(ref, dist, device="cpu")
        torch.set_num_threads(4)
        parallel = score_frames(ref, dist, device="cpu")
    finally:
        torch.set_num_threads(threads)
    for field in ("psnr_rgb", "psnr_y", "ssim_y", "ms_ssim", "mse_rgb", "mse_y"):
        np.testing.assert_array_equal(getattr(parallel, field), getattr(serial, field))


def test_fused_kernels_and_torch_code_agree(monkeypatch, cpu_backend):
    if cpu_backend != "fused":
        pytest.skip("sets both backends itself: once is enough")
    ref = textured_frames(2, CIF, seed=25)
    dist = add_noise(ref, 12.0, seed=26)
    monkeypatch.setattr(metrics, "_CPU_BACKEND", "fused")
    fused = score_frames(ref, dist, device="cpu")
    monkeypatch.setattr(metrics, "_CPU_BACKEND", "torch")
    plain = score_frames(ref, dist, device="cpu")
    np.testing.assert_array_equal(fused.mse_rgb, plain.mse_rgb)  # both exact integer sums
    np.testing.assert_allclose(fused.mse_y, plain.mse_y, rtol=1e-12)
    np.testing.assert_allclose(fused.ssim_y, plain.ssim_y, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fused.ms_ssim, plain.ms_ssim, rtol=0, atol=1e-6)


def test_sums_of_squares_stay_exact_on_a_worst_case_4k_frame():
    # Black against white at 3840x2160: every difference is 255 in every channel,
    # the largest square sums a frame can have; any overflow or float rounding in
    # the per-strip sums would show as an MSE other than exactly 255**2.
    ref = np.zeros((1, 2160, 3840, 3), dtype=np.uint8)
    dist = np.full_like(ref, 255)
    mse_rgb, mse_y = mse_per_frame(ref, dist, device="cpu")
    assert mse_rgb[0] == 255.0**2
    assert mse_y[0] == 255.0**2
    assert psnr_y(ref, dist, device="cpu")[0] == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["y_ref", "y_dist"])
def test_luma_metrics_refuse_non_finite_planes_by_name(bad, which):
    # A NaN in one plane of a stack must not quietly turn its neighbours' scores
    # into NaN (the torch filter stacks planes): it is refused, naming the argument.
    rng = np.random.default_rng(27)
    planes = {"y_ref": rng.uniform(0, 255, (2, 24, 24)), "y_dist": rng.uniform(0, 255, (2, 24, 24))}
    planes[which][0, 3, 4] = bad
    for fn in (ssim_luma, lambda a, b: ms_ssim_luma(a, b)[0]):
        with pytest.raises(MetricInputError, match=f"{which} holds NaN or infinite"):
            fn(planes["y_ref"], planes["y_dist"])


def test_fused_kernels_work_in_a_forked_child_after_the_parent_used_its_threads(cpu_backend):
    if cpu_backend != "fused":
        pytest.skip("the thread pool belongs to the fused kernels")
    import os

    ref = textured_frames(2, CIF, seed=28)
    dist = add_noise(ref, 7.0, seed=29)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = score_frames(ref, dist, device="cpu").ssim_y  # starts the parent's pool
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a pool thread-less copy of the parent, as in Celery prefork
            try:
                value = score_frames(ref, dist, device="cpu").ssim_y
                os.write(write, value.tobytes())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            got = np.frombuffer(pipe.read(), dtype=np.float64)
        os.waitpid(pid, 0)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(got, expected)
