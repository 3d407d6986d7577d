"""Full-reference quality and rate metrics for decoded video (DESIGN section 5).

Every function takes 8-bit RGB frames shaped ``(N, H, W, 3)`` (``uint8``) and
returns per-frame values as float64 numpy arrays.  The device is chosen per
call ("auto": CUDA when available, else CPU): on CUDA the arithmetic runs in
torch; on CPU in the fused kernels of :mod:`evaluation.fused_cpu`, which do
the same arithmetic in one sweep over each strip of rows (the torch code runs
on CPU too, and the tests check both against scikit-image and each other).

What is computed, in short:

* PSNR on RGB (MSE over all three channels) and on luma Y (BT.709 full range),
  per frame, from *exact* integer sums of squared differences; identical frames
  and anything above 100 dB are reported as :data:`PSNR_CAP_DB` and counted.
* SSIM on Y with the Gaussian window of Wang et al. (2004): 11 taps, sigma 1.5,
  K1 = 0.01, K2 = 0.03, L = 255, population covariances, mean over the part of
  the SSIM map whose window lies inside the frame.  This is exactly
  ``skimage.metrics.structural_similarity(y1, y2, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255)``.
* MS-SSIM on Y (Wang, Simoncelli and Bovik, 2003), 5 scales or fewer on small
  frames.
* PSNR on the Y, U and V planes of YUV 4:2:0 (BT.709, limited range: the very
  conversion the classic anchors get, :mod:`evaluation.yuv`), and PSNR-YUV =
  (6 PSNR_Y + PSNR_U + PSNR_V) / 8 (the DCVC test conditions), per frame and
  pooled (each plane's PSNR of the mean MSE, then weighted).
* Rate: bits, kbps, bits per pixel and compression ratio against raw RGB.

Bump :data:`METRICS_VERSION` whenever a formula or a constant here changes, so
that stored numbers never mix silently across methods.
"""

from __future__ import annotations

from config import UserError

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from evaluation import fused_cpu

__all__ = [
    "BT709_WEIGHTS",
    "DATA_RANGE",
    "METRICS_VERSION",
    "MS_SSIM_WEIGHTS",
    "MetricInputError",
    "PSNR_CAP_DB",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WIN_SIZE",
    "FITNESS_METRICS",
    "FrameScores",
    "YUV_WEIGHTS",
    "concat_scores",
    "fitness_value",
    "yuv420_scores",
    "yuv_plane_sse",
    "gaussian_window",
    "ms_ssim_luma",
    "ms_ssim_scales",
    "ms_ssim_y",
    "mse_per_frame",
    "psnr_from_mse",
    "psnr_rgb",
    "psnr_y",
    "rate_stats",
    "resolve_device",
    "rgb_to_y",
    "score_frames",
    "ssim_luma",
    "ssim_y",
    "summarize",
]

METRICS_VERSION = "cf-metrics-3"

PSNR_CAP_DB = 100.0
DATA_RANGE = 255.0

# BT.709 luma from full-range R'G'B'.  The same weights scaled by 10_000 are
# integers, which is what makes the luma MSE exact (see ``_sse_y_from_difference``).
BT709_WEIGHTS = (0.2126, 0.7152, 0.0722)
_BT709_INT = (2126.0, 7152.0, 722.0)
_BT709_SCALE = 10_000.0

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy.ndimage's truncate as used by scikit-image: radius 5
SSIM_WIN_SIZE = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1  # 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

#: PSNR-YUV = (6 Y + U + V) / 8 over the 4:2:0 planes (DCVC / JVET-style weighting).
YUV_WEIGHTS = (6.0, 1.0, 1.0)

#: The quality a campaign or an evaluation may rank by (the y axis of every BD
#: figure). PSNRs are in dB; SSIM and MS-SSIM enter BD curves in dB too,
#: ``-10 log10(1 - value)``, as learned-codec papers plot them (see :func:`fitness_value`).
FITNESS_METRICS = ("psnr_y", "psnr_yuv", "ssim_y", "ms_ssim")

# Squares of 8-bit differences are at most 255**2 = 65025, so a float32 sum of
# up to 258 of them is an integer below 2**24 and therefore exact whatever the
# summation order; blocks of 256 are summed in float32, the block sums in
# float64.
_EXACT_BLOCK = 256

# Pixels per batch of frames.  On CPU one 720p frame at a time keeps the four
# filtered planes inside the last-level cache, which matters more than the
# per-call overhead; small frames are batched so the overhead is amortised.
_CPU_BATCH_PIXELS = 1_000_000
_CUDA_BATCH_PIXELS = 32_000_000

# Which code computes metrics on CPU: "fused" (evaluation.fused_cpu, one
# sweep per strip of rows, several times faster) or "torch" (the very code
# CUDA runs).  Tests run every check with both, which is how the CUDA code is
# exercised on machines without a GPU.
_CPU_BACKEND = "fused"


def _fused(device: torch.device) -> bool:
    return device.type == "cpu" and _CPU_BACKEND == "fused"


class MetricInputError(UserError, ValueError):
    """Frames or arguments a metric cannot be computed on; the message says why."""


# --------------------------------------------------------------------------- #
# Devices and input checks
# --------------------------------------------------------------------------- #


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device``.

    ``"auto"`` means CUDA when ``torch.cuda.is_available()``, else CPU.  Asking
    for CUDA explicitly where there is none is an error, not a silent fallback.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise MetricInputError(f"unknown device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MetricInputError(f"device {str(resolved)!r} requested but torch sees no CUDA device")
    if resolved.type not in ("cpu", "cuda"):
        raise MetricInputError(f"device {str(resolved)!r} is not supported (use 'cpu', 'cuda' or 'auto')")
    return resolved


def _check_rgb_pair(reference: np.ndarray, distorted: np.ndarray, *, min_size: int = 1) -> None:
    for name, frames in (("reference", reference), ("distorted", distorted)):
        if not isinstance(frames, np.ndarray):
            raise MetricInputError(f"{name} must be a numpy array, got {type(frames).__name__}")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise MetricInputError(
                f"{name} must be shaped (N, H, W, 3) RGB frames, got shape {frames.shape}"
            )
        if frames.dtype != np.uint8:
            raise MetricInputError(f"{name} must be uint8 RGB (0..255), got dtype {frames.dtype}")
    if reference.shape != distorted.shape:
        raise MetricInputError(
            f"reference and distorted differ in shape: {reference.shape} vs {distorted.shape}"
        )
    n, h, w, _ = reference.shape
    if n == 0:
        raise MetricInputError("no frames to score (N = 0)")
    if h < min_size or w < min_size:
        raise MetricInputError(
            f"frames of {w}x{h} are too small: this metric needs at least {min_size}x{min_size} "
            f"(the {SSIM_WIN_SIZE}-tap SSIM window must fit)"
        )


def _check_luma_pair(y_ref, y_dist) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = []
    for name, plane in (("y_ref", y_ref), ("y_dist", y_dist)):
        if isinstance(plane, np.ndarray):
            if not (np.issubdtype(plane.dtype, np.floating) or np.issubdtype(plane.dtype, np.integer)):
                raise MetricInputError(f"{name} must be real-valued, got dtype {plane.dtype}")
            plane = _as_tensor(plane)
        elif not isinstance(plane, torch.Tensor):
            raise MetricInputError(f"{name} must be a numpy array or torch tensor, got {type(plane).__name__}")
        if plane.is_complex() or plane.dtype == torch.bool:
            raise MetricInputError(f"{name} must be real-valued, got dtype {plane.dtype}")
        if plane.ndim not in (2, 3):
            raise MetricInputError(f"{name} must be shaped (H, W) or (N, H, W), got {tuple(plane.shape)}")
        if plane.is_floating_point() and not bool(torch.isfinite(plane).all()):
            # No SSIM of a NaN is meaningful, and in the stacked torch filter a
            # NaN would also reach the neighbouring planes' windows (0 * NaN).
            raise MetricInputError(f"{name} holds NaN or infinite values")
        tensors.append(plane if plane.ndim == 3 else plane.unsqueeze(0))
    if tensors[0].shape != tensors[1].shape:
        raise MetricInputError(
            f"y_ref and y_dist differ in shape: {tuple(tensors[0].shape)} vs {tuple(tensors[1].shape)}"
        )
    n, h, w = tensors[0].shape
    if n == 0:
        raise MetricInputError("no frames to score (N = 0)")
    if h < SSIM_WIN_SIZE or w < SSIM_WIN_SIZE:
        raise MetricInputError(
            f"planes of {w}x{h} are smaller than the {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} SSIM window"
        )
    return tensors[0], tensors[1]


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    # Clip frames are read-only numpy arrays; nothing here writes to them, so
    # torch's warning about non-writable memory is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


def _batches(n_frames: int, height: int, width: int, device: torch.device):
    budget = _CUDA_BATCH_PIXELS if device.type == "cuda" else _CPU_BATCH_PIXELS
    step = max(1, budget // (height * width))
    for start in range(0, n_frames, step):
        yield slice(start, min(n_frames, start + step))


def _fused_sse(reference: np.ndarray, distorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame exact SSE on RGB and on Y with the fused CPU kernel."""
    sse_rgb, sse_y, _, _ = fused_cpu.luma_and_sse(reference, distorted, want_sse=True, want_luma=False)
    return sse_rgb, sse_y


# --------------------------------------------------------------------------- #
# Colour
# --------------------------------------------------------------------------- #


def rgb_to_y(frames):
    """Luma Y = 0.2126 R + 0.7152 G + 0.0722 B (BT.709, full range, no offset).

    ``frames``: ``(..., 3)`` RGB, numpy array or torch tensor, values 0..255.
    Returns the same kind of object with the channel axis dropped: float64 for
    numpy input, and for torch input float64 if the input is float64, else
    float32 (on the input's device).
    """
    if isinstance(frames, torch.Tensor):
        if frames.shape[-1:] != (3,):
            raise MetricInputError(f"frames must end in an RGB axis of 3, got shape {tuple(frames.shape)}")
        dtype = torch.float64 if frames.dtype == torch.float64 else torch.float32
        weights = torch.tensor(BT709_WEIGHTS, dtype=dtype, device=frames.device)
        return frames.to(dtype) @ weights
    if isinstance(frames, np.ndarray):
        if frames.shape[-1:] != (3,):
            raise MetricInputError(f"frames must end in an RGB axis of 3, got shape {frames.shape}")
        return frames.astype(np.float64) @ np.asarray(BT709_WEIGHTS, dtype=np.float64)
    raise MetricInputError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")


# --------------------------------------------------------------------------- #
# MSE and PSNR
# --------------------------------------------------------------------------- #


def _exact_sum_of_squares(values: torch.Tensor) -> torch.Tensor:
    """Per-row sum of squares of integer-valued float32 rows with |v| <= 255, in float64, exactly."""
    n_rows, n = values.shape
    whole = (n // _EXACT_BLOCK) * _EXACT_BLOCK
    total = torch.zeros(n_rows, dtype=torch.float64, device=values.device)
    if whole:
        blocks = values[:, :whole].unflatten(1, (whole // _EXACT_BLOCK, _EXACT_BLOCK))
        total += (blocks * blocks).sum(-1).to(torch.float64).sum(-1)
    if whole < n:
        tail = values[:, whole:].to(torch.float64)
        total += (tail * tail).sum(-1)
    return total


def _dot3(values: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    """``values @ weights`` over a last axis of 3, as float32."""
    if values.device.type == "cpu":
        # numpy's matmul over a length-3 axis is about 3x faster than torch's
        # matrix-vector kernel on CPU; both compute the same float32 dot.
        return torch.from_numpy(
            np.matmul(values.numpy(), np.asarray(weights, dtype=np.float32), dtype=np.float32)
        )
    return values.to(torch.float32) @ torch.tensor(weights, dtype=torch.float32, device=values.device)


def _luma(frames_u8: torch.Tensor) -> torch.Tensor:
    """BT.709 luma of (..., 3) uint8 RGB as float32 (..., H, W)."""
    return _dot3(frames_u8, BT709_WEIGHTS)


def _rgb_difference(ref_u8: torch.Tensor, dist_u8: torch.Tensor) -> torch.Tensor:
    """ref - dist as float32 (exact: integers in -255..255); int16 first is cheapest."""
    return torch.sub(ref_u8.to(torch.int16), dist_u8.to(torch.int16)).to(torch.float32)


def _sse_rgb(diff: torch.Tensor) -> torch.Tensor:
    return _exact_sum_of_squares(diff.reshape(diff.shape[0], -1))


def _sse_y_from_difference(diff: torch.Tensor) -> torch.Tensor:
    # 10_000 * (Y(ref) - Y(dist)) = integer weights . (ref - dist): exact in
    # float32 (|value| <= 2_550_000 < 2**24); its square needs float64.
    luma_diff = _dot3(diff, _BT709_INT).reshape(diff.shape[0], -1).to(torch.float64)
    return torch.linalg.vecdot(luma_diff, luma_diff) / (_BT709_SCALE * _BT709_SCALE)


def mse_per_frame(
    reference: np.ndarray, distorted: np.ndarray, *, device: str | torch.device = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean squared error on RGB and on luma Y.

    ``MSE_RGB = sum((ref - dist)**2) / (3 H W)`` over all three channels and
    ``MSE_Y = sum((Y(ref) - Y(dist))**2) / (H W)`` with BT.709 luma
    (:func:`rgb_to_y`).  Both come from exact integer sums (``10_000 * Y`` is
    an integer), so they equal the float64 formula up to its own rounding.

    Returns ``(mse_rgb, mse_y)``, float64 arrays of length N, in (8-bit code
    value)**2.
    """
    _check_rgb_pair(reference, distorted)
    dev = resolve_device(device)
    n, h, w, _ = reference.shape
    if _fused(dev):
        sse_rgb, sse_y = _fused_sse(reference, distorted)
        return sse_rgb / (3 * h * w), sse_y / (h * w)
    mse_rgb = np.empty(n, dtype=np.float64)
    mse_y = np.empty(n, dtype=np.float64)
    ref_all, dist_all = _as_tensor(reference), _as_tensor(distorted)
    for batch in _batches(n, h, w, dev):
        diff = _rgb_difference(ref_all[batch].to(dev), dist_all[batch].to(dev))
        mse_rgb[batch] = (_sse_rgb(diff) / (3 * h * w)).cpu().numpy()
        mse_y[batch] = (_sse_y_from_difference(diff) / (h * w)).cpu().numpy()
    return mse_rgb, mse_y


def psnr_from_mse(mse, *, data_range: float = DATA_RANGE) -> tuple[np.ndarray, int]:
    """PSNR in dB from MSE, capped: ``min(10 log10(L**2 / MSE), PSNR_CAP_DB)``.

    ``MSE == 0`` (identical frames) gives :data:`PSNR_CAP_DB` instead of inf.
    Returns ``(psnr, n_capped)``: float64 array (same shape as ``mse``) and how
    many values were capped.  A negative or non-finite MSE is an error.
    """
    mse = np.asarray(mse, dtype=np.float64)
    if not np.all(np.isfinite(mse)) or np.any(mse < 0):
        raise MetricInputError(f"MSE must be finite and non-negative, got {mse!r}")
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10((data_range * data_range) / mse)
    capped = psnr >= PSNR_CAP_DB  # also catches +inf from MSE == 0
    return np.where(capped, PSNR_CAP_DB, psnr), int(np.count_nonzero(capped))


def psnr_rgb(reference: np.ndarray, distorted: np.ndarray, *, device: str | torch.device = "auto") -> np.ndarray:
    """Per-frame PSNR over all RGB channels, dB, capped at :data:`PSNR_CAP_DB`.

    ``PSNR = 10 log10(255**2 / MSE_RGB)`` with MSE over the ``3 H W`` samples of
    each frame; equals ``skimage.metrics.peak_signal_noise_ratio(ref, dist,
    data_range=255)`` frame by frame below the cap.
    """
    _check_rgb_pair(reference, distorted)
    dev = resolve_device(device)
    n, h, w, _ = reference.shape
    if _fused(dev):
        return psnr_from_mse(_fused_sse(reference, distorted)[0] / (3 * h * w))[0]
    sse = np.empty(n, dtype=np.float64)
    ref_all, dist_all = _as_tensor(reference), _as_tensor(distorted)
    for batch in _batches(n, h, w, dev):
        sse[batch] = _sse_rgb(_rgb_difference(ref_all[batch].to(dev), dist_all[batch].to(dev))).cpu().numpy()
    return psnr_from_mse(sse / (3 * h * w))[0]


def psnr_y(reference: np.ndarray, distorted: np.ndarray, *, device: str | torch.device = "auto") -> np.ndarray:
    """Per-frame PSNR on BT.709 luma (:func:`rgb_to_y`), dB, capped at :data:`PSNR_CAP_DB`.

    ``PSNR_Y = 10 log10(255**2 / MSE_Y)``; equals
    ``peak_signal_noise_ratio(rgb_to_y(ref), rgb_to_y(dist), data_range=255)``.
    """
    _check_rgb_pair(reference, distorted)
    dev = resolve_device(device)
    n, h, w, _ = reference.shape
    if _fused(dev):
        return psnr_from_mse(_fused_sse(reference, distorted)[1] / (h * w))[0]
    sse = np.empty(n, dtype=np.float64)
    ref_all, dist_all = _as_tensor(reference), _as_tensor(distorted)
    for batch in _batches(n, h, w, dev):
        diff = _rgb_difference(ref_all[batch].to(dev), dist_all[batch].to(dev))
        sse[batch] = _sse_y_from_difference(diff).cpu().numpy()
    return psnr_from_mse(sse / (h * w))[0]


# --------------------------------------------------------------------------- #
# SSIM and MS-SSIM
# --------------------------------------------------------------------------- #


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """The normalised 1-D Gaussian taps scipy.ndimage (hence scikit-image) uses.

    ``radius = int(truncate * sigma + 0.5)``; ``w[i] = exp(-i**2 / (2 sigma**2))``
    for ``i = -radius..radius``, divided by their sum.  11 taps for the defaults.
    """
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


_TAPS = tuple(float(v) for v in gaussian_window())

# Output rows per block of the vertical pass's banded matrix product: small
# blocks waste few multiplications on the band's zeros (8 of 18 columns are
# taps), yet are large enough for the matrix kernel to beat 11 separate
# shift-and-add passes over the plane.
_VERTICAL_BLOCK = 8

# Rows of the SSIM map computed at once on CPU: the four filtered planes of a
# strip of this height stay in the cores' caches between the many elementwise
# steps, instead of streaming whole 720p planes through memory each time.
_CPU_STRIP_ROWS = 176


def _band_matrix(rows: int, device: torch.device) -> torch.Tensor:
    """(rows, rows + 10) matrix whose row i holds the taps in columns i..i+10."""
    taps = torch.tensor(_TAPS, dtype=torch.float32, device=device)
    band = torch.zeros(rows, rows + len(_TAPS) - 1, dtype=torch.float32, device=device)
    for i in range(rows):
        band[i, i : i + len(_TAPS)] = taps
    return band


def _vertical_valid(planes: torch.Tensor) -> torch.Tensor:
    """11-tap Gaussian down the rows of contiguous ``(B, H, W)``, 'valid': ``(B, H - 10, W)``.

    The B planes are filtered as one tall ``(B H, W)`` plane, whose output
    rows ``i0 .. i0 + 7`` are ``band @ tall[i0 : i0 + 18]`` with the (8, 18)
    band matrix of :func:`_band_matrix`; the overlapping 18-row input blocks
    are strided views, so one batched matrix product does the whole pass.
    The 10 output rows of each plane whose window crosses into the next
    plane are dropped, and a last partial block is recomputed from the final
    18 rows.  The result is a view with contiguous rows.
    """
    n, h, w = planes.shape
    taps = len(_TAPS)
    tall = planes.reshape(n * h, w)
    out_rows = n * h - taps + 1
    block = _VERTICAL_BLOCK
    if out_rows < block:
        cols = torch.mul(tall[0:out_rows], _TAPS[0])
        for k in range(1, taps):
            cols.add_(tall[k : out_rows + k], alpha=_TAPS[k])
        return cols.unsqueeze(0)
    band = _band_matrix(block, planes.device)
    n_blocks = out_rows // block
    out = torch.empty(n * h, w, dtype=planes.dtype, device=planes.device)
    inputs = tall.as_strided((n_blocks, block + taps - 1, w), (block * w, w, 1))
    torch.matmul(band, inputs, out=out[: n_blocks * block].view(n_blocks, block, w))
    if n_blocks * block < out_rows:
        out[out_rows - block : out_rows] = band @ tall[n * h - (block + taps - 1) :]
    return out.view(n, h, w)[:, : h - taps + 1]


def _gaussian_valid(planes: torch.Tensor) -> torch.Tensor:
    """Separable 11-tap Gaussian over the last two axes, 'valid' region only.

    Output ``(..., H - 10, W - 10)``.  scikit-image filters the whole plane
    with mode='reflect' and then crops ``(win_size - 1) // 2 = 5`` from every
    side before averaging; the window of every pixel it keeps lies inside the
    plane, so the padding never reaches the mean and a valid filter is exactly
    the same.  The vertical pass is a banded matrix product
    (:func:`_vertical_valid`); the horizontal one shifts and adds, which beats
    torch's CPU convolutions for one-channel planes by an order of magnitude
    and is just as good on CUDA.
    """
    h, w = planes.shape[-2:]
    taps = len(_TAPS)
    cols = _vertical_valid(planes.reshape(-1, h, w).contiguous())
    out = torch.mul(cols[..., :, 0 : w - taps + 1], _TAPS[0])
    for k in range(1, taps):
        out.add_(cols[..., :, k : w - taps + 1 + k], alpha=_TAPS[k])
    return out.reshape(*planes.shape[:-2], h - taps + 1, w - taps + 1)


def _ssim_terms(
    s: torch.Tensor, d: torch.Tensor, offset: torch.Tensor, data_range: float, want_ssim: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean SSIM and mean contrast-structure per plane, float64, shape (B,).

    Works on ``s = x + y - offset`` and ``d = x - y`` rather than on x and y:
    the local statistics SSIM needs are

        2 ux uy     = ((us + offset)**2 - ud**2) / 2
        ux**2+uy**2 = ((us + offset)**2 + ud**2) / 2
        2 sxy       = (var_s - var_d) / 2
        sx**2+sy**2 = (var_s + var_d) / 2

    so four filtered planes (s, d, s**2, d**2) replace five, and the
    variances come from centred (s) or small (d) values, which keeps the
    float32 cancellation in ``E[v**2] - E[v]**2`` far below the 1e-4 we
    promise against scikit-image's float64.  On CPU the map is computed in
    strips of :data:`_CPU_STRIP_ROWS` rows (each with the 10 rows its windows
    reach below it) and the strip sums are added up.
    """
    h = s.shape[-2]
    taps = len(_TAPS)
    out_rows = h - taps + 1
    strip = out_rows if s.device.type == "cuda" else _CPU_STRIP_ROWS
    ssim_sum = torch.zeros(s.shape[:-2], dtype=torch.float64, device=s.device)
    cs_sum = torch.zeros_like(ssim_sum)
    for top in range(0, out_rows, strip):
        rows = slice(top, min(out_rows, top + strip) + taps - 1)
        ssim_part, cs_part = _ssim_strip_sums(s[..., rows, :], d[..., rows, :], offset, data_range, want_ssim)
        cs_sum += cs_part
        if want_ssim:
            ssim_sum += ssim_part
    n_valid = out_rows * (s.shape[-1] - taps + 1)
    return (ssim_sum / n_valid if want_ssim else None), cs_sum / n_valid


def _map_sum(values: torch.Tensor) -> torch.Tensor:
    # Rows of ~1000 values summed in float32 (pairwise, ~1e-7 relative),
    # the row sums in float64: as accurate as a float64 sum here, 5x faster.
    return values.sum(dim=-1).sum(dim=-1, dtype=torch.float64)


def _ssim_strip_sums(
    s: torch.Tensor, d: torch.Tensor, offset: torch.Tensor, data_range: float, want_ssim: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Sums of the SSIM and contrast-structure maps over the valid part of ``(..., h, w)`` planes."""
    c1, c2 = _ssim_constants(data_range)
    # Both numerator and denominator carry a factor 1/2 in the identities of
    # _ssim_terms; it cancels, so it is never applied, and the constants
    # become 2 C1 and 2 C2.  2 C2 is added to s**2 before filtering: the taps
    # sum to 1, so it comes out of the filter added to E[s**2] (and thus to
    # var_s) without a pass of its own.
    planes = torch.empty((4, *s.shape), dtype=s.dtype, device=s.device)
    planes[0] = s
    planes[1] = d
    torch.addcmul(torch.tensor(2 * c2, dtype=s.dtype, device=s.device), s, s, out=planes[2])
    torch.mul(d, d, out=planes[3])
    mu_s, mu_d, var_s, var_d = _gaussian_valid(planes).unbind(0)
    var_s.addcmul_(mu_s, mu_s, value=-1.0)  # var_s + 2 C2
    var_d.addcmul_(mu_d, mu_d, value=-1.0)
    cs_map = torch.sub(var_s, var_d).div_(var_s.add_(var_d))
    del var_s, var_d
    cs_sum = _map_sum(cs_map)
    if not want_ssim:
        return None, cs_sum
    sum_sq = mu_s.add_(offset).square_().add_(2 * c1)
    diff_sq = mu_d.square_()
    ssim_map = torch.sub(sum_sq, diff_sq).div_(sum_sq.add_(diff_sq)).mul_(cs_map)
    return _map_sum(ssim_map), cs_sum


_TAPS_F32 = np.asarray(_TAPS, dtype=np.float32)


def _ssim_constants(data_range: float) -> tuple[float, float]:
    return (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2


def _cpu_float32(planes: torch.Tensor) -> np.ndarray:
    return planes.detach().to("cpu", torch.float32).contiguous().numpy()


def ms_ssim_scales(height: int, width: int, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many MS-SSIM scales fit: the coarsest must hold the 11x11 window.

    Scale ``j`` (1-based) has ``floor(H / 2**(j-1))`` x ``floor(W / 2**(j-1))``
    pixels; returns the largest ``M <= max_scales`` whose scale M is at least
    11 pixels both ways (5 for CIF, 4 for QCIF), or 0 if even scale 1 is not.
    """
    scales = 0
    h, w = height, width
    while scales < max_scales and min(h, w) >= SSIM_WIN_SIZE:
        scales += 1
        h, w = h // 2, w // 2
    return scales


def _centre(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Centre on the mean of x + y per frame: SSIM's variances are shift
    # invariant and the luminance term gets the offset back exactly.
    s = x + y
    offset = s.mean(dim=(-2, -1), keepdim=True)
    s.sub_(offset)
    return s, x - y, offset


def _average_pool_2x2(planes: torch.Tensor) -> torch.Tensor:
    """Mean of each 2x2 block; an odd last row or column is dropped.

    Rows first: those slices are whole contiguous rows, which torch adds far
    faster than avg_pool2d's generic kernel on CPU.
    """
    h, w = (planes.shape[-2] // 2) * 2, (planes.shape[-1] // 2) * 2
    rows = planes[..., 0:h:2, :w] + planes[..., 1:h:2, :w]
    return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)


def _ms_ssim(planes: tuple, scales: int, pool, terms, first_cs: np.ndarray | None = None) -> np.ndarray:
    """MS-SSIM per plane from the scale-1 pair ``planes``, whatever form it takes.

    ``pool(planes)`` gives the next scale's pair; ``terms(planes, want_ssim)``
    gives ``(mean SSIM or None, mean cs)`` per plane as float64 numpy arrays.
    ``first_cs``: scale 1's mean cs when the caller already has it.
    """
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales], dtype=np.float64)
    weights = weights / weights.sum()
    values = []
    for scale in range(scales):
        if scale > 0:
            planes = pool(planes)
        last = scale == scales - 1
        if scale == 0 and first_cs is not None and not last:
            values.append(first_cs)
            continue
        ssim_mean, cs_mean = terms(planes, last)
        values.append(ssim_mean if last else cs_mean)
    # A negative mean cs or SSIM (anti-correlated content) would make the
    # fractional power NaN; clamp at 0 as TensorFlow and pytorch_msssim do.
    stacked = np.clip(np.stack(values, axis=-1), 0.0, None)
    return np.prod(stacked**weights, axis=-1)


def _torch_ms_ssim(
    s: torch.Tensor,
    d: torch.Tensor,
    offset: torch.Tensor,
    data_range: float,
    scales: int,
    first_cs: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`_ms_ssim` on the centred torch planes of :func:`_centre`."""

    def terms(pair, want_ssim):
        ssim_mean, cs_mean = _ssim_terms(*pair, offset, data_range, want_ssim)
        return (None if ssim_mean is None else ssim_mean.cpu().numpy()), cs_mean.cpu().numpy()

    # s and d are linear in x and y, so pooling them equals pooling x and y.
    return _ms_ssim((s, d), scales, lambda pair: tuple(map(_average_pool_2x2, pair)), terms, first_cs)


def _fused_ms_ssim(
    x: np.ndarray, y: np.ndarray, data_range: float, scales: int, first_cs: np.ndarray | None = None
) -> np.ndarray:
    """:func:`_ms_ssim` on float32 ``(N, H, W)`` luma stacks with the fused CPU kernels."""
    c1, c2 = _ssim_constants(data_range)

    def terms(pair, want_ssim):
        return fused_cpu.ssim_sums(*pair, _TAPS_F32, c1, c2, want_ssim=want_ssim)

    return _ms_ssim((x, y), scales, lambda pair: tuple(map(fused_cpu.pool_2x2, pair)), terms, first_cs)


def ssim_luma(
    y_ref, y_dist, *, data_range: float = DATA_RANGE, device: str | torch.device = "auto"
) -> np.ndarray:
    """Mean SSIM of luma planes (Wang et al. 2004), one value per plane.

    ``y_ref``, ``y_dist``: ``(H, W)`` or ``(N, H, W)`` real arrays/tensors,
    at least 11x11.  With local Gaussian-weighted statistics (11 taps,
    sigma 1.5, population covariances) and ``C1 = (0.01 L)**2``,
    ``C2 = (0.03 L)**2``, ``L = data_range``:

        SSIM = (2 ux uy + C1)(2 sxy + C2) / ((ux**2 + uy**2 + C1)(sx**2 + sy**2 + C2))

    averaged over the pixels at least 5 from every border.  Equal (to float32
    rounding, well under 1e-4) to ``skimage.metrics.structural_similarity(y1,
    y2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=data_range)``.  Computed in float32, averaged in float64.
    """
    ref, dist = _check_luma_pair(y_ref, y_dist)
    if not (data_range > 0 and math.isfinite(data_range)):
        raise MetricInputError(f"data_range must be positive and finite, got {data_range!r}")
    dev = resolve_device(device)
    n, h, w = ref.shape
    out = np.empty(n, dtype=np.float64)
    c1, c2 = _ssim_constants(data_range)
    for batch in _batches(n, h, w, dev):
        if _fused(dev):
            x, y = _cpu_float32(ref[batch]), _cpu_float32(dist[batch])
            out[batch] = fused_cpu.ssim_sums(x, y, _TAPS_F32, c1, c2, want_ssim=True)[0]
            continue
        x = ref[batch].to(dev).to(torch.float32)
        y = dist[batch].to(dev).to(torch.float32)
        s, d, offset = _centre(x, y)
        out[batch] = _ssim_terms(s, d, offset, data_range, want_ssim=True)[0].cpu().numpy()
    return out


def ms_ssim_luma(
    y_ref,
    y_dist,
    *,
    data_range: float = DATA_RANGE,
    max_scales: int = len(MS_SSIM_WEIGHTS),
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, int]:
    """Multi-scale SSIM of luma planes (Wang, Simoncelli, Bovik 2003).

    With M = :func:`ms_ssim_scales` (5 unless the frame is too small for the
    11x11 window at the coarsest scale) and weights ``w_j`` = (0.0448, 0.2856,
    0.3001, 0.2363, 0.1333)[:M] renormalised to sum to 1:

        MS-SSIM = prod_{j<M} max(cs_j, 0)**w_j * max(ssim_M, 0)**w_M

    where ``cs_j`` is the mean contrast-structure term ``(2 sxy + C2) /
    (sx**2 + sy**2 + C2)`` at scale j and ``ssim_M`` the mean SSIM (luminance
    times contrast-structure) at the coarsest scale, both over the valid
    region exactly as :func:`ssim_luma`.  Scale j+1 is the 2x2 average of
    scale j (odd last row/column dropped).  Negative means are clamped to 0
    so the fractional powers stay real.

    Returns ``(values, scales_used)``.
    """
    ref, dist = _check_luma_pair(y_ref, y_dist)
    if not (data_range > 0 and math.isfinite(data_range)):
        raise MetricInputError(f"data_range must be positive and finite, got {data_range!r}")
    if not 1 <= max_scales <= len(MS_SSIM_WEIGHTS):
        raise MetricInputError(f"max_scales must be 1..{len(MS_SSIM_WEIGHTS)}, got {max_scales}")
    dev = resolve_device(device)
    n, h, w = ref.shape
    scales = ms_ssim_scales(h, w, max_scales)
    out = np.empty(n, dtype=np.float64)
    for batch in _batches(n, h, w, dev):
        if _fused(dev):
            out[batch] = _fused_ms_ssim(_cpu_float32(ref[batch]), _cpu_float32(dist[batch]), data_range, scales)
            continue
        x = ref[batch].to(dev).to(torch.float32)
        y = dist[batch].to(dev).to(torch.float32)
        s, d, offset = _centre(x, y)
        out[batch] = _torch_ms_ssim(s, d, offset, data_range, scales)
    return out, scales


def ssim_y(reference: np.ndarray, distorted: np.ndarray, *, device: str | torch.device = "auto") -> np.ndarray:
    """Per-frame SSIM on BT.709 luma of 8-bit RGB frames (see :func:`ssim_luma`)."""
    return score_frames(reference, distorted, device=device, ms_ssim=False, psnr=False).ssim_y


def ms_ssim_y(
    reference: np.ndarray, distorted: np.ndarray, *, device: str | torch.device = "auto"
) -> tuple[np.ndarray, int]:
    """Per-frame MS-SSIM on BT.709 luma of 8-bit RGB frames (see :func:`ms_ssim_luma`)."""
    scores = score_frames(reference, distorted, device=device, ms_ssim=True, psnr=False)
    return scores.ms_ssim, scores.ms_ssim_scales


# --------------------------------------------------------------------------- #
# All of it at once
# --------------------------------------------------------------------------- #


@dataclass
class FrameScores:
    """Per-frame scores, float64 arrays of length N (dB for PSNR, code values**2 for MSE).

    ``ms_ssim`` is all-NaN and ``ms_ssim_scales`` 0 when MS-SSIM was not asked
    for; ``psnr_rgb``/``psnr_y``/``mse_*`` are all-NaN when PSNR was not asked
    for (only :func:`ssim_y`/:func:`ms_ssim_y` do that).  ``psnr_capped``
    counts frames whose RGB or Y PSNR was capped at :data:`PSNR_CAP_DB`.
    """

    psnr_rgb: np.ndarray
    psnr_y: np.ndarray
    ssim_y: np.ndarray
    ms_ssim: np.ndarray
    mse_rgb: np.ndarray
    mse_y: np.ndarray
    ms_ssim_scales: int
    psnr_capped: int
    #: MSE of the 4:2:0 planes (limited-range code values**2); all-NaN when not
    #: computed (odd frame sizes, or ``yuv=False``).
    mse_y420: np.ndarray | None = None
    mse_u: np.ndarray | None = None
    mse_v: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.ssim_y.shape[0]
        for name in ("mse_y420", "mse_u", "mse_v"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, np.nan))

    @property
    def n_frames(self) -> int:
        return int(self.ssim_y.shape[0])

    @property
    def has_yuv(self) -> bool:
        return bool(np.all(np.isfinite(self.mse_y420))) and self.n_frames > 0

    @property
    def psnr_y420(self) -> np.ndarray:
        return psnr_from_mse(self.mse_y420)[0] if self.has_yuv else np.full(self.n_frames, np.nan)

    @property
    def psnr_u(self) -> np.ndarray:
        return psnr_from_mse(self.mse_u)[0] if self.has_yuv else np.full(self.n_frames, np.nan)

    @property
    def psnr_v(self) -> np.ndarray:
        return psnr_from_mse(self.mse_v)[0] if self.has_yuv else np.full(self.n_frames, np.nan)

    @property
    def psnr_yuv(self) -> np.ndarray:
        """Per frame (6 PSNR_Y + PSNR_U + PSNR_V) / 8 on the 4:2:0 planes (each capped)."""
        wy, wu, wv = YUV_WEIGHTS
        return (wy * self.psnr_y420 + wu * self.psnr_u + wv * self.psnr_v) / (wy + wu + wv)


def concat_scores(parts: list[FrameScores]) -> FrameScores:
    """One :class:`FrameScores` from consecutive batches (streamed scoring)."""
    if not parts:
        raise MetricInputError("no scores to concatenate")
    scales = {p.ms_ssim_scales for p in parts}
    if len(scales) != 1:
        raise MetricInputError(f"batches used different MS-SSIM scales: {sorted(scales)}")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return FrameScores(
        psnr_rgb=cat("psnr_rgb"),
        psnr_y=cat("psnr_y"),
        ssim_y=cat("ssim_y"),
        ms_ssim=cat("ms_ssim"),
        mse_rgb=cat("mse_rgb"),
        mse_y=cat("mse_y"),
        ms_ssim_scales=parts[0].ms_ssim_scales,
        psnr_capped=sum(p.psnr_capped for p in parts),
        mse_y420=cat("mse_y420"),
        mse_u=cat("mse_u"),
        mse_v=cat("mse_v"),
    )


def yuv_plane_sse(ref_planes, dist_planes) -> tuple[int, int, int]:
    """Exact integer SSE of each of the three (Y, U, V) uint8 planes of one frame."""
    out = []
    for name, a, b in zip("YUV", ref_planes, dist_planes):
        if a.shape != b.shape:
            raise MetricInputError(f"{name} planes differ in shape: {a.shape} vs {b.shape}")
        d = a.astype(np.int32) - b.astype(np.int32)
        out.append(int(np.einsum("ij,ij->", d, d, dtype=np.int64)))
    return out[0], out[1], out[2]


def yuv420_scores(reference: np.ndarray, distorted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame MSE of the Y, U and V planes after the anchors' RGB -> YUV 4:2:0 conversion.

    Both frame stacks ``(N, H, W, 3)`` uint8 RGB (H and W even) are converted by
    :func:`evaluation.yuv.to_yuv420_planes` (BT.709, limited range, swscale
    bit-exact); ``MSE_P = sum((P_ref - P_dist)**2) / pixels(P)``, exact.
    """
    from evaluation import yuv

    _check_rgb_pair(reference, distorted)
    n, h, w, _ = reference.shape
    if h % 2 or w % 2:
        raise MetricInputError(f"YUV 4:2:0 needs an even width and height, got {w}x{h}")
    mse = np.empty((3, n), dtype=np.float64)
    sizes = (h * w, (h // 2) * (w // 2), (h // 2) * (w // 2))
    for i in range(n):
        sse = yuv_plane_sse(yuv.to_yuv420_planes(reference[i]), yuv.to_yuv420_planes(distorted[i]))
        for k in range(3):
            mse[k, i] = sse[k] / sizes[k]
    return mse[0], mse[1], mse[2]


def fitness_value(summary: dict, metric: str) -> float | None:
    """The number a BD curve uses for ``metric`` (one of :data:`FITNESS_METRICS`).

    PSNRs as they are (dB); SSIM-Y and MS-SSIM as ``-10 log10(1 - v)`` dB
    (capped at :data:`PSNR_CAP_DB`), so equal steps mean equal error ratios as
    for PSNR. None when the summary lacks it (e.g. no YUV on an odd-sized clip).
    """
    if metric not in FITNESS_METRICS:
        raise MetricInputError(f"unknown fitness metric {metric!r}; known: {', '.join(FITNESS_METRICS)}")
    value = summary.get(metric)
    if value is None or not math.isfinite(value):
        return None
    if metric in ("ssim_y", "ms_ssim"):
        if value >= 1.0:
            return PSNR_CAP_DB
        return min(PSNR_CAP_DB, -10.0 * math.log10(1.0 - value))
    return float(value)


def score_frames(
    reference: np.ndarray,
    distorted: np.ndarray,
    *,
    device: str | torch.device = "auto",
    ms_ssim: bool = True,
    psnr: bool = True,
    yuv: bool = True,
) -> FrameScores:
    """PSNR (RGB and Y), SSIM-Y and MS-SSIM-Y of every frame, in one pass.

    With ``yuv`` (and an even width and height) also the MSE of the YUV 4:2:0
    planes (:func:`yuv420_scores`), hence PSNR-Y/U/V and PSNR-YUV.

    ``reference`` and ``distorted``: ``(N, H, W, 3)`` uint8 RGB, same shape,
    N >= 1, H and W >= 11.  Formulas as in :func:`mse_per_frame`,
    :func:`psnr_from_mse`, :func:`ssim_luma` and :func:`ms_ssim_luma`; the
    SSIM at scale 1 and MS-SSIM's first contrast-structure term share one set
    of filtered planes.
    """
    _check_rgb_pair(reference, distorted, min_size=SSIM_WIN_SIZE)
    dev = resolve_device(device)
    n, h, w, _ = reference.shape
    scales = ms_ssim_scales(h, w) if ms_ssim else 0
    nan = np.full(n, np.nan)
    sse_rgb, sse_y, ssim, msssim = nan.copy(), nan.copy(), np.empty(n), nan.copy()
    ref_all, dist_all = _as_tensor(reference), _as_tensor(distorted)
    c1, c2 = _ssim_constants(DATA_RANGE)
    for batch in _batches(n, h, w, dev):
        if _fused(dev):
            sse_rgb[batch], sse_y[batch], x, y = fused_cpu.luma_and_sse(
                reference[batch], distorted[batch], want_sse=psnr, want_luma=True
            )
            ssim[batch], cs_mean = fused_cpu.ssim_sums(x, y, _TAPS_F32, c1, c2, want_ssim=True)
            if ms_ssim:
                msssim[batch] = _fused_ms_ssim(x, y, DATA_RANGE, scales, first_cs=cs_mean)
            continue
        ref_u8, dist_u8 = ref_all[batch].to(dev), dist_all[batch].to(dev)
        if psnr:
            diff = _rgb_difference(ref_u8, dist_u8)
            sse_rgb[batch] = _sse_rgb(diff).cpu().numpy()
            sse_y[batch] = _sse_y_from_difference(diff).cpu().numpy()
            del diff
        s, d, offset = _centre(_luma(ref_u8), _luma(dist_u8))
        ssim_mean, cs_mean = _ssim_terms(s, d, offset, DATA_RANGE, want_ssim=True)
        ssim[batch] = ssim_mean.cpu().numpy()
        if ms_ssim:
            msssim[batch] = _torch_ms_ssim(s, d, offset, DATA_RANGE, scales, first_cs=cs_mean.cpu().numpy())
    mse_rgb = sse_rgb / (3 * h * w)
    mse_y = sse_y / (h * w)
    if psnr:
        psnr_rgb_v, _ = psnr_from_mse(mse_rgb)
        psnr_y_v, _ = psnr_from_mse(mse_y)
        capped = int(np.count_nonzero((psnr_rgb_v >= PSNR_CAP_DB) | (psnr_y_v >= PSNR_CAP_DB)))
    else:
        psnr_rgb_v, psnr_y_v, capped = nan.copy(), nan.copy(), 0
    mse_yuv = (None, None, None)
    if yuv and psnr and h % 2 == 0 and w % 2 == 0:
        mse_yuv = yuv420_scores(reference, distorted)
    return FrameScores(
        psnr_rgb=psnr_rgb_v,
        psnr_y=psnr_y_v,
        ssim_y=ssim,
        ms_ssim=msssim,
        mse_rgb=mse_rgb,
        mse_y=mse_y,
        ms_ssim_scales=scales,
        psnr_capped=capped,
        mse_y420=mse_yuv[0],
        mse_u=mse_yuv[1],
        mse_v=mse_yuv[2],
    )


def summarize(scores: FrameScores) -> dict:
    """Clip-level numbers from per-frame scores, as plain Python floats and ints.

    ``psnr_rgb``/``psnr_y``: mean of the (capped) per-frame PSNRs.
    ``psnr_rgb_pooled``/``psnr_y_pooled``: ``10 log10(255**2 / mean(MSE))``,
    capped at :data:`PSNR_CAP_DB` -- one bad frame weighs more here than in
    the mean of dB values.  ``ssim_y``, ``ms_ssim``: means over frames
    (``ms_ssim`` is None when it was not computed).  ``ms_ssim_scales``:
    scales used.  ``psnr_capped_frames``: frames with a capped PSNR.  Never
    inf or NaN.
    """
    if scores.n_frames == 0:
        raise MetricInputError("cannot summarise zero frames")
    for name in ("psnr_rgb", "psnr_y", "ssim_y", "mse_rgb", "mse_y"):
        if not np.all(np.isfinite(getattr(scores, name))):
            raise MetricInputError(f"FrameScores.{name} holds NaN or inf; summarize needs PSNR and SSIM computed")
    has_ms_ssim = scores.ms_ssim_scales > 0
    if has_ms_ssim and not np.all(np.isfinite(scores.ms_ssim)):
        raise MetricInputError("FrameScores.ms_ssim holds NaN or inf")
    pooled_rgb, _ = psnr_from_mse(np.mean(scores.mse_rgb))
    pooled_y, _ = psnr_from_mse(np.mean(scores.mse_y))
    return {**_summarize_core(scores, pooled_rgb, pooled_y, has_ms_ssim), **summarize_yuv(scores)}


def summarize_yuv(scores: FrameScores) -> dict:
    """The YUV 4:2:0 part of :func:`summarize`: means of per-frame PSNRs and pooled
    values (PSNR of each plane's mean MSE; PSNR-YUV pooled = weighted pooled planes).
    All None when YUV was not computed."""
    names = ("psnr_y420", "psnr_u", "psnr_v", "psnr_yuv",
             "psnr_y420_pooled", "psnr_u_pooled", "psnr_v_pooled", "psnr_yuv_pooled")
    if not scores.has_yuv:
        return dict.fromkeys(names)
    pooled = [float(psnr_from_mse(np.mean(m))[0]) for m in (scores.mse_y420, scores.mse_u, scores.mse_v)]
    wy, wu, wv = YUV_WEIGHTS
    return {
        "psnr_y420": float(np.mean(scores.psnr_y420)),
        "psnr_u": float(np.mean(scores.psnr_u)),
        "psnr_v": float(np.mean(scores.psnr_v)),
        "psnr_yuv": float(np.mean(scores.psnr_yuv)),
        "psnr_y420_pooled": pooled[0],
        "psnr_u_pooled": pooled[1],
        "psnr_v_pooled": pooled[2],
        "psnr_yuv_pooled": (wy * pooled[0] + wu * pooled[1] + wv * pooled[2]) / (wy + wu + wv),
    }


def _summarize_core(scores: FrameScores, pooled_rgb, pooled_y, has_ms_ssim: bool) -> dict:
    return {
        "psnr_rgb": float(np.mean(scores.psnr_rgb)),
        "psnr_y": float(np.mean(scores.psnr_y)),
        "psnr_rgb_pooled": float(pooled_rgb),
        "psnr_y_pooled": float(pooled_y),
        "ssim_y": float(np.mean(scores.ssim_y)),
        "ms_ssim": float(np.mean(scores.ms_ssim)) if has_ms_ssim else None,
        "ms_ssim_scales": int(scores.ms_ssim_scales),
        "psnr_capped_frames": int(scores.psnr_capped),
    }


# --------------------------------------------------------------------------- #
# Rate
# --------------------------------------------------------------------------- #


def rate_stats(n_bytes: int, n_frames: int, width: int, height: int, fps: float) -> dict:
    """Rate of a coded clip of ``n_bytes`` (every byte, container included).

    ``bits = 8 n_bytes``; ``kbps = bits * fps / n_frames / 1000`` (kilo = 1000);
    ``bpp = bits / (n_frames * width * height)``;
    ``compression_ratio = 3 * n_frames * width * height / n_bytes`` (raw 8-bit
    RGB over coded size).
    """
    for name, value in (("n_bytes", n_bytes), ("n_frames", n_frames), ("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise MetricInputError(f"{name} must be an integer, got {value!r}")
        if value <= 0:
            raise MetricInputError(f"{name} must be positive, got {value}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
        raise MetricInputError(f"fps must be a number, got {fps!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise MetricInputError(f"fps must be positive and finite, got {fps!r}")
    bits = 8 * int(n_bytes)
    pixels = int(n_frames) * int(width) * int(height)
    return {
        "bits": bits,
        "kbps": bits * float(fps) / int(n_frames) / 1000.0,
        "bpp": bits / pixels,
        "compression_ratio": 3 * pixels / int(n_bytes),
    }
