"""Fused CPU kernels behind :mod:`evaluation.metrics` (numba, compiled once and cached).

Why a second implementation: on CPU, torch runs every elementwise step and
every filter tap as its own pass over whole planes, so SSIM of a 720p frame
spends most of its time moving the same bytes through memory (about 60
passes).  These kernels do the same arithmetic in one sweep per strip of
rows, with the working set in the core's caches, and the strips run on a
small thread pool (the kernels release the GIL).  On CUDA the torch code in
:mod:`evaluation.metrics` is used; on CPU the torch code is still there and
tested against these kernels and scikit-image (``metrics._CPU_BACKEND``).

Results do not depend on the number of threads: strips are fixed by the
frame's shape, each strip's sums are computed by one thread in a fixed order,
and the strip sums are added in strip order.

Numerics, kernel by kernel:

* :func:`_rgb_pair_rows`: sums of squared RGB differences and of squared
  ``10_000 x`` luma differences in int64, exactly (at worst 64 x 8192 x
  (255 x 10_000)**2 = 3.4e18 per strip of 8K rows, below 2**63 = 9.2e18);
  BT.709 luma as ``(2126 R + 7152 G +
  722 B) * 1e-4`` -- the integer part exact, one float32 rounding.
* :func:`_ssim_rows`: the 11-tap Gaussian, 'valid' region, on ``s = x + y -
  offset`` and ``d = x - y`` exactly as documented in
  :func:`evaluation.metrics._ssim_terms` (four filtered planes instead of
  five; ``offset`` is the mean of ``x + y`` over the strip's input rows, so
  the float32 variances ``E[v**2] - E[v]**2`` come from centred values).
  Map sums are accumulated in float64.
* ``fastmath`` is limited to re-association (so the row reductions
  vectorise), FMA contraction and ignoring the sign of zero: no
  approximate division, and NaN/inf semantics kept.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

__all__ = ["STRIP_ROWS", "luma_and_sse", "pool_2x2", "ssim_sums", "thread_count", "warm_up"]

_FASTMATH = {"reassoc", "contract", "nsz"}
_JIT_OPTIONS = {"nogil": True, "fastmath": _FASTMATH, "boundscheck": False, "error_model": "numpy"}


def _jit(fn):
    """Compile ``fn`` lazily, caching the machine code beside this file (or in the user's cache dir).

    Where neither is writable (a read-only install run by a user without a
    home), numba refuses ``cache=True``; the kernels are then compiled once
    per process instead (a few seconds), which changes nothing else.
    """
    try:
        return numba.njit(cache=True, **_JIT_OPTIONS)(fn)
    except RuntimeError:
        return numba.njit(cache=False, **_JIT_OPTIONS)(fn)


# Output rows per job.  Large enough that the 10 rows of window each strip
# re-reads above its first output row cost little, small enough that a 720p
# frame makes a dozen jobs for the threads to share.
STRIP_ROWS = 64


@_jit
def _rgb_pair_rows(ref, dist, r0, r1, want_sse, want_luma, x, y):  # pragma: no cover - compiled
    """Rows r0..r1 of one frame pair: exact SSEs (returned) and luma (into x, y).

    Rows are read as flat runs of R, G, B bytes (index 3 j + c): LLVM
    vectorises that de-interleave several times better than ``[j, c]``.
    """
    w = ref.shape[1]
    sse_rgb = np.int64(0)
    sse_y = np.int64(0)
    for i in range(r0, r1):
        a = ref[i].reshape(3 * w)
        b = dist[i].reshape(3 * w)
        if want_sse:
            row_rgb = np.int64(0)
            for j in range(3 * w):
                d = np.int32(a[j]) - np.int32(b[j])
                row_rgb += d * d
            row_y = np.int64(0)
            for j in range(w):
                dy = np.int64(
                    2126 * (np.int32(a[3 * j]) - np.int32(b[3 * j]))
                    + 7152 * (np.int32(a[3 * j + 1]) - np.int32(b[3 * j + 1]))
                    + 722 * (np.int32(a[3 * j + 2]) - np.int32(b[3 * j + 2]))
                )
                row_y += dy * dy
            sse_rgb += row_rgb
            sse_y += row_y
        if want_luma:
            xi = x[i]
            yi = y[i]
            for j in range(w):
                xi[j] = np.float32(
                    2126 * np.int32(a[3 * j]) + 7152 * np.int32(a[3 * j + 1]) + 722 * np.int32(a[3 * j + 2])
                ) * np.float32(1e-4)
                yi[j] = np.float32(
                    2126 * np.int32(b[3 * j]) + 7152 * np.int32(b[3 * j + 1]) + 722 * np.int32(b[3 * j + 2])
                ) * np.float32(1e-4)
    return sse_rgb, sse_y


# The Gaussian window's length, a compile-time constant so that the tap loops
# below unroll and the loops over columns vectorise with the sums in registers.
NTAP = 11


@_jit
def _ssim_rows(x, y, r0, r1, taps, c1x2, c2x2, want_ssim, ring, v):  # pragma: no cover - compiled
    """Sums of the SSIM and contrast-structure maps over valid output rows r0..r1 of one plane pair.

    Output row i is the window over input rows i .. i + NTAP - 1.  A ring
    holds s, d, s**2 and d**2 of the last NTAP input rows, each row stored
    twice (slots k and k + NTAP) so that any NTAP consecutive rows are
    consecutive slots; each output row is then a vertical pass over the
    ring, and one loop over columns doing the horizontal pass and the SSIM
    formula, all on rows that stay in the core's caches.  ``ring`` (2 NTAP,
    4, W) and ``v`` (4, W) are the caller's float32 scratch.
    """
    w = x.shape[1]
    wv = w - NTAP + 1
    first = r0
    last = r1 + NTAP - 1  # input rows first .. last - 1
    total = 0.0
    for i in range(first, last):
        row = 0.0
        for j in range(w):
            row += x[i, j] + y[i, j]
        total += row
    offset = np.float32(total / ((last - first) * w))
    tp = (taps[0], taps[1], taps[2], taps[3], taps[4], taps[5], taps[6], taps[7], taps[8], taps[9], taps[10])
    ssim_sum = 0.0
    cs_sum = 0.0
    for src in range(first, last):
        xs = x[src]
        ys = y[src]
        lo = ring[src % NTAP]
        hi = ring[src % NTAP + NTAP]
        for j in range(w):
            s = xs[j] + ys[j] - offset
            d = xs[j] - ys[j]
            lo[0, j] = s
            lo[1, j] = d
            lo[2, j] = s * s
            lo[3, j] = d * d
            hi[0, j] = s
            hi[1, j] = d
            hi[2, j] = s * s
            hi[3, j] = d * d
        out = src - NTAP + 1
        if out < r0:
            continue
        base = out % NTAP
        for p in range(4):
            vp = v[p]
            for j in range(w):
                acc = np.float32(0.0)
                for k in range(NTAP):
                    acc += tp[k] * ring[base + k, p, j]
                vp[j] = acc
        v_s = v[0]
        v_d = v[1]
        v_ss = v[2]
        v_dd = v[3]
        row_ssim = 0.0
        row_cs = 0.0
        for j in range(wv):
            mu_s = np.float32(0.0)
            mu_d = np.float32(0.0)
            e_ss = np.float32(0.0)
            e_dd = np.float32(0.0)
            for k in range(NTAP):
                t = tp[k]
                mu_s += t * v_s[j + k]
                mu_d += t * v_d[j + k]
                e_ss += t * v_ss[j + k]
                e_dd += t * v_dd[j + k]
            var_s = e_ss - mu_s * mu_s + c2x2  # var_s + 2 C2
            var_d = e_dd - mu_d * mu_d
            cs = (var_s - var_d) / (var_s + var_d)
            row_cs += cs
            if want_ssim:
                m = mu_s + offset
                sum_sq = m * m + c1x2
                diff_sq = mu_d * mu_d
                row_ssim += (sum_sq - diff_sq) / (sum_sq + diff_sq) * cs
        ssim_sum += row_ssim
        cs_sum += row_cs
    return ssim_sum, cs_sum


@_jit
def _pool_rows(src, dst, r0, r1):  # pragma: no cover - compiled
    """dst[i, j] = mean of src[2i:2i+2, 2j:2j+2] for rows r0..r1 of dst."""
    w = dst.shape[1]
    for i in range(r0, r1):
        a = src[2 * i]
        b = src[2 * i + 1]
        o = dst[i]
        for j in range(w):
            o[j] = ((a[2 * j] + a[2 * j + 1]) + (b[2 * j] + b[2 * j + 1])) * np.float32(0.25)


# --------------------------------------------------------------------------- #
# Threads
# --------------------------------------------------------------------------- #

_local = threading.local()


def _scratch(n: int) -> np.ndarray:
    """A float32 buffer of ``n`` values owned by the calling thread, reused across calls.

    Kernel scratch allocated per call would be fresh pages from the OS each
    time (glibc maps large blocks), and faulting them in cost about as much
    as the filtering itself.
    """
    buf = getattr(_local, "scratch", None)
    if buf is None or buf.size < n:
        buf = _local.scratch = np.empty(n, dtype=np.float32)
    return buf[:n]


def _ssim_job(x, y, r0, r1, taps, c1x2, c2x2, want_ssim):
    w = x.shape[1]
    buf = _scratch((2 * NTAP + 1) * 4 * w)
    ring = buf[: 2 * NTAP * 4 * w].reshape(2 * NTAP, 4, w)
    v = buf[2 * NTAP * 4 * w :].reshape(4, w)
    return _ssim_rows(x, y, r0, r1, taps, c1x2, c2x2, want_ssim, ring, v)


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None


def thread_count() -> int:
    """Threads the kernels use: torch's CPU thread count (CODECFLEET_TORCH_THREADS sets it in workers)."""
    return max(1, torch.get_num_threads())


def _drop_pool_after_fork() -> None:
    # A forked child (Celery prefork) inherits the executor object but not
    # its threads, and maybe a lock some other thread held at the fork;
    # forget both so the child makes its own.
    global _pool, _pool_key, _pool_lock
    _pool, _pool_key, _pool_lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_drop_pool_after_fork)


def _run(jobs: list) -> list:
    """Call each ``(fn, args)`` in ``jobs``; results in job order."""
    threads = min(thread_count(), len(jobs))
    if threads <= 1:
        return [fn(*args) for fn, args in jobs]
    global _pool, _pool_key
    with _pool_lock:
        key = (os.getpid(), thread_count())
        if _pool is None or _pool_key != key:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix="codecfleet-metrics")
            _pool_key = key
        pool = _pool
    return list(pool.map(lambda job: job[0](*job[1]), jobs))


def _per_frame(n_frames: int, rows: int, job) -> list[list]:
    """Run ``job(f, r0, r1) -> (fn, args)`` for every frame f and strip r0..r1 of ``rows``.

    Returns the results grouped by frame, each frame's strips in order.
    """
    strips = [(r, min(rows, r + STRIP_ROWS)) for r in range(0, rows, STRIP_ROWS)]
    results = _run([job(f, r0, r1) for f in range(n_frames) for r0, r1 in strips])
    return [results[f * len(strips) : (f + 1) * len(strips)] for f in range(n_frames)]


# --------------------------------------------------------------------------- #
# Frame-level entry points (inputs already checked by evaluation.metrics)
# --------------------------------------------------------------------------- #


def luma_and_sse(
    ref: np.ndarray, dist: np.ndarray, *, want_sse: bool, want_luma: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """For ``(N, H, W, 3)`` uint8 frame pairs: per-frame SSE on RGB and on Y, and the two luma stacks.

    Returns ``(sse_rgb, sse_y, y_ref, y_dist)``: float64 ``(N,)`` sums of
    squared differences (NaN when ``want_sse`` is false) and float32
    ``(N, H, W)`` BT.709 luma (None when ``want_luma`` is false).
    """
    ref = np.ascontiguousarray(ref)
    dist = np.ascontiguousarray(dist)
    n, h, w, _ = ref.shape
    if want_luma:
        x = np.empty((n, h, w), dtype=np.float32)
        y = np.empty((n, h, w), dtype=np.float32)
    else:
        x = y = np.empty((n, 1, 1), dtype=np.float32)  # untouched placeholder for the kernel's signature
    parts = _per_frame(
        n, h, lambda f, r0, r1: (_rgb_pair_rows, (ref[f], dist[f], r0, r1, want_sse, want_luma, x[f], y[f]))
    )
    sse_rgb = np.full(n, np.nan)
    sse_y = np.full(n, np.nan)
    if want_sse:
        for f, part in enumerate(parts):
            # Python ints: exact whatever the frame size.
            sse_rgb[f] = float(sum(int(r[0]) for r in part))
            sse_y[f] = sum(int(r[1]) for r in part) / 1e8
    return sse_rgb, sse_y, (x if want_luma else None), (y if want_luma else None)


def ssim_sums(
    x: np.ndarray, y: np.ndarray, taps: np.ndarray, c1: float, c2: float, *, want_ssim: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Mean SSIM and mean contrast-structure over the valid region of each ``(N, H, W)`` plane pair.

    ``x``, ``y``: float32, H and W at least ``len(taps)``.  Returns float64
    ``(N,)`` arrays (the SSIM one all-NaN when ``want_ssim`` is false).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    taps = np.ascontiguousarray(taps, dtype=np.float32)
    n, h, w = x.shape
    ntap = taps.shape[0]
    if ntap != NTAP:
        raise ValueError(f"the fused SSIM kernel is built for a window of {NTAP} taps, got {ntap}")
    hv, wv = h - ntap + 1, w - ntap + 1
    c1x2, c2x2 = np.float32(2 * c1), np.float32(2 * c2)
    parts = _per_frame(n, hv, lambda f, r0, r1: (_ssim_job, (x[f], y[f], r0, r1, taps, c1x2, c2x2, want_ssim)))
    ssim = np.full(n, np.nan)
    cs = np.empty(n)
    for f, part in enumerate(parts):
        cs[f] = sum(r[1] for r in part) / (hv * wv)
        if want_ssim:
            ssim[f] = sum(r[0] for r in part) / (hv * wv)
    return ssim, cs


def pool_2x2(planes: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block of float32 ``(N, H, W)`` planes; an odd last row or column is dropped."""
    planes = np.ascontiguousarray(planes, dtype=np.float32)
    n, h, w = planes.shape
    out = np.empty((n, h // 2, w // 2), dtype=np.float32)
    _per_frame(n, h // 2, lambda f, r0, r1: (_pool_rows, (planes[f], out[f], r0, r1)))
    return out


def warm_up() -> None:
    """Compile (or load from the cache) every kernel for the argument types scoring uses.

    Read-only and writable frames are distinct types to numba (clip frames are
    read-only, decoded ones usually not), so each pairing is touched once.  A
    Celery worker calls this in its parent process before forking, so pool
    processes, including each replacement after ``worker_max_tasks_per_child``,
    start with the machine code in memory.  Runs single-threaded: it starts no
    thread pool in a process about to fork.
    """
    frames = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    read_only = frames.copy()
    read_only.flags.writeable = False
    taps = np.full(NTAP, 1.0 / NTAP, dtype=np.float32)
    for ref in (frames, read_only):
        for dist in (frames, read_only):
            luma_and_sse(ref, dist, want_sse=True, want_luma=False)
    _, _, x, y = luma_and_sse(frames, frames, want_sse=False, want_luma=True)
    ssim_sums(x, y, taps, 1.0, 1.0, want_ssim=True)
    pool_2x2(x)
