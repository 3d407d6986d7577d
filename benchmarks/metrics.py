"""Speed and agreement of evaluation.metrics against scikit-image on 1280x720 frames.

    .venv/bin/python benchmarks/metrics.py [--frames N] [--repeats R] [--device auto|cpu|cuda] [--threads T]
                                           [--cpu-backend fused|torch]

Frames are generated here (colour gradients, moving texture, edges, sensor
noise) and the distorted copy is blurred, noisy and coarsely quantised, so the
numbers are those of plausible content rather than of pure noise.  Each metric
runs on all N frames, ours and the reference alternately, R times; the table
gives the median over the R runs in ms per frame (min in brackets), the ratio
of the medians, and the largest per-frame |difference| in value.  PyAV decode
speed is measured on a clip written with libx264 into a temporary directory.

On CPU "ours" is the fused numba kernels of evaluation/fused_cpu.py, what
codecfleet runs; ``--cpu-backend torch`` times the torch code instead (the
code CUDA runs).  The header line names the device and the kernels.

Reference columns: scikit-image's ``peak_signal_noise_ratio`` and
``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` per frame, the luma rows
including numpy's RGB->Y conversion (ours includes its own).  scikit-image
has no MS-SSIM, so that row's reference is MS-SSIM built the straightforward
way from the same scipy ``gaussian_filter`` scikit-image's SSIM uses.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import av
import numba
import numpy as np
import scipy
import skimage
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation import metrics  # noqa: E402

WIDTH, HEIGHT = 1280, 720


def make_frames(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference frames with structure, and a blurred + noisy + quantised copy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    ref, dist = [], []
    for t in range(n):
        shift = 4.0 * t
        sky = 40 + 150 * (yy / HEIGHT)
        texture = 35 * np.sin((xx + shift) / 11.0) * np.cos((yy - shift) / 17.0)
        blocks = 50 * (((xx + shift) // 160 + yy // 120) % 2)  # hard edges
        luma = sky + texture + blocks
        rgb = np.stack([luma + 20, luma, 0.7 * luma + 40 * (xx / WIDTH)], axis=-1)
        rgb += rng.normal(0, 4, rgb.shape).astype(np.float32)
        frame = np.clip(rgb, 0, 255).astype(np.uint8)
        blurred = gaussian_filter(frame.astype(np.float32), sigma=(0.8, 0.8, 0))
        noisy = blurred + rng.normal(0, 3, blurred.shape).astype(np.float32)
        quantised = np.round(noisy / 4) * 4
        ref.append(frame)
        dist.append(np.clip(quantised, 0, 255).astype(np.uint8))
    return np.stack(ref), np.stack(dist)


def reference_ms_ssim(y_ref: np.ndarray, y_dist: np.ndarray, scales: int) -> float:
    weights = np.array(metrics.MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = y_ref, y_dist
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
        crop = (slice(5, -5), slice(5, -5))
        if j == scales - 1:
            lum = (2 * ux * uy + c1) / (ux * ux + uy * uy + c1)
            values.append((lum * cs)[crop].mean())
        else:
            values.append(cs[crop].mean())
    return float(np.prod(np.maximum(values, 0.0) ** weights))


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, np.asarray(value, dtype=np.float64)


def compare(ours: Callable, theirs: Callable, n: int, repeats: int) -> dict:
    ours()  # warm-up: allocator, thread pool, first-call dispatch
    ours_s, theirs_s = [], []
    for _ in range(repeats):
        t, ours_v = timed(ours)
        ours_s.append(t)
        t, theirs_v = timed(theirs)
        theirs_s.append(t)
    return {
        "ours": 1000 * statistics.median(ours_s) / n,
        "ours_min": 1000 * min(ours_s) / n,
        "theirs": 1000 * statistics.median(theirs_s) / n,
        "theirs_min": 1000 * min(theirs_s) / n,
        "diff": float(np.max(np.abs(ours_v - theirs_v))),
    }


def pyav_decode_fps(frames: np.ndarray, repeats: int) -> tuple[float, float, int]:
    """Decode fps (median, best) of a libx264 clip of ``frames`` to rgb24 ndarrays."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height = WIDTH, HEIGHT
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        runs = []
        decoded = 0
        for _ in range(repeats):
            start = time.perf_counter()
            with av.open(str(path)) as container:
                decoded = sum(1 for f in container.decode(video=0) if f.to_ndarray(format="rgb24") is not None)
            runs.append(time.perf_counter() - start)
        if decoded != len(frames):
            raise RuntimeError(f"decoded {decoded} frames from a clip of {len(frames)}")
        return decoded / statistics.median(runs), decoded / min(runs), decoded


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _write_1080p(path: Path, n: int, crf: int) -> None:
    """n generated 1920x1080 frames (gradients, moving texture, noise) encoded with libx264, one frame at a time."""
    h, w = 1080, 1920
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"crf": str(crf), "preset": "ultrafast"}
        for t in range(n):
            base = 60 + 120 * (xx / w) + 40 * np.sin((xx + 5 * t) / 9.0) * np.cos(yy / 7.0)
            rgb = np.stack([base + 20, base, 0.6 * base + 30 * (yy / h)], axis=-1)
            rgb += rng.normal(0, 3, rgb.shape).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)


_WHOLE_CLIP = """
import sys
from evaluation import metrics
from evaluation.video import read_video
ref, dist = read_video(sys.argv[1]), read_video(sys.argv[2])
metrics.summarize(metrics.score_frames(ref.frames, dist.frames, device=sys.argv[3]))
"""


def _peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of a child process, from wait4's rusage."""
    import subprocess

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def rss_table(n: int, device: str) -> int:
    """Peak RSS of ``codecfleet metrics`` (streaming) and of the whole-clip way, 1080p, n frames."""
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        ref, dist = Path(tmp) / "ref.mp4", Path(tmp) / "dist.mp4"
        _write_1080p(ref, n, 16)
        _write_1080p(dist, n, 34)
        raw_gib = n * 1920 * 1080 * 3 / 2**30
        print(f"1920x1080, {n} frames per video ({raw_gib:.2f} GiB of RGB each), device {device}")
        print(f"{'way':<44} {'peak RSS MiB':>12} {'seconds':>8}")
        cli = [sys.executable, "-m", "codecfleet.cli", "metrics", str(ref), str(dist), "--json", "--device", device]
        rss, secs = _peak_rss(cli)
        print(f"{'codecfleet metrics (streaming, 8-frame batches)':<44} {rss:>12.0f} {secs:>8.1f}")
        whole = [sys.executable, "-c", _WHOLE_CLIP, str(ref), str(dist), device]
        rss_w, secs_w = _peak_rss(whole)
        print(f"{'whole clips in memory (the old way)':<44} {rss_w:>12.0f} {secs_w:>8.1f}")
        print(f"limit 1024 MiB: {'met' if rss <= 1024 else 'NOT met'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="1280x720 frames per run (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per metric (default 5)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own, shown in the header)"
    )
    parser.add_argument(
        "--cpu-backend",
        choices=("fused", "torch"),
        default="fused",
        help="on CPU: the fused kernels (default, what codecfleet uses) or the torch code CUDA runs",
    )
    parser.add_argument(
        "--rss", action="store_true",
        help="instead: peak RSS of `codecfleet metrics` on a generated 1080p pair (--rss-frames, default 300), "
             "against the whole-clip way (both videos read into memory first)",
    )
    parser.add_argument("--rss-frames", type=int, default=300)
    args = parser.parse_args(argv)
    if args.rss:
        return rss_table(args.rss_frames, args.device)
    metrics._CPU_BACKEND = args.cpu_backend
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.frames < 1 or args.repeats < 1:
        parser.error("--frames and --repeats must be at least 1")
    n = args.frames
    device = metrics.resolve_device(args.device)

    ref, dist = make_frames(n)
    weights = np.asarray(metrics.BT709_WEIGHTS)

    def sk_psnr_rgb():
        return [peak_signal_noise_ratio(r, d, data_range=255) for r, d in zip(ref, dist)]

    def sk_psnr_y():
        return [peak_signal_noise_ratio(r @ weights, d @ weights, data_range=255) for r, d in zip(ref, dist)]

    def sk_ssim_y():
        return [
            structural_similarity(
                r @ weights, d @ weights, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=255,
            )  # fmt: skip
            for r, d in zip(ref, dist)
        ]

    scales = metrics.ms_ssim_scales(HEIGHT, WIDTH)

    def ref_ms_ssim():
        return [reference_ms_ssim(r @ weights, d @ weights, scales) for r, d in zip(ref, dist)]

    rows = [
        ("PSNR-RGB", compare(lambda: metrics.psnr_rgb(ref, dist, device=device), sk_psnr_rgb, n, args.repeats)),
        ("PSNR-Y", compare(lambda: metrics.psnr_y(ref, dist, device=device), sk_psnr_y, n, args.repeats)),
        ("SSIM-Y", compare(lambda: metrics.ssim_y(ref, dist, device=device), sk_ssim_y, n, args.repeats)),
        (
            f"MS-SSIM ({scales} scales)",
            compare(lambda: metrics.ms_ssim_y(ref, dist, device=device)[0], ref_ms_ssim, n, args.repeats),
        ),
    ]
    metrics.score_frames(ref, dist, device=device)
    all_runs = [timed(lambda: metrics.score_frames(ref, dist, device=device).ssim_y)[0] for _ in range(args.repeats)]
    fps, best_fps, decoded = pyav_decode_fps(ref if n >= 8 else np.concatenate([ref] * (8 // n + 1)), args.repeats)

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
        f"torch threads {torch.get_num_threads()}, "
        f"device {device}{f' ({args.cpu_backend} kernels)' if device.type == 'cpu' else ''}; "
        f"torch {torch.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
        f"scikit-image {skimage.__version__}, scipy {scipy.__version__}, PyAV {av.__version__}"
    )
    print(
        f"{n} frames of {WIDTH}x{HEIGHT}, {args.repeats} runs; ms/frame = median over runs (best in brackets)"
    )
    header = f"{'metric':<20} {'ours ms/frame':>18} {'reference ms/frame':>20} {'speed-up':>9} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for name, row in rows:
        print(
            f"{name:<20} {row['ours']:>9.2f} ({row['ours_min']:6.2f}) {row['theirs']:>11.2f} ({row['theirs_min']:6.2f})"
            f" {row['theirs'] / row['ours']:>8.1f}x {row['diff']:>11.2e}"
        )
    per_frame = [1000 * s / n for s in all_runs]
    print(
        f"{'score_frames (all)':<20} {statistics.median(per_frame):>9.2f} ({min(per_frame):6.2f})"
        f" {'-':>20} {'-':>9} {'-':>11}"
    )
    print(
        f"{'PyAV decode':<20} {1000 / fps:>9.2f} ({1000 / best_fps:6.2f}) {'-':>20} {'-':>9} {'-':>11}"
        f"   = {fps:.0f} fps (best {best_fps:.0f}) on {decoded} libx264 frames to rgb24"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
