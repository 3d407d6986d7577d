"""One candidate, one clip, K rate points: encode, store, re-read, decode, score.

Every number in the result comes from an artifact that was produced and read
back: bits from the container file on disk, quality from the frames that a
separate decoder instance produced from the payloads *re-read from that file*.
If something cannot be measured the result says ``status: failed`` with the
stage and the reason, and carries no made-up number.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation import anchors as anchors_mod
from evaluation import metrics
from evaluation.container import read_bitstream, write_bitstream
from evaluation.rd import RDError, bd_psnr, bd_rate
from evaluation.runner import CandidateError, CandidateRunner, check_frame
from evaluation.video import Clip

EVALUATOR_VERSION = "cf-eval-1"
DEFAULT_RATE_POINTS = 4
#: The curve every BD figure is computed on: PSNR of luma, as is customary for
#: YUV 4:2:0 anchors (a candidate's chroma errors still show in psnr_rgb).
BD_METRIC = "psnr_y"


def quality_points(k: int) -> list[float]:
    """``k`` qualities spread evenly over [0.1, 0.9] (the candidate's rate knob)."""
    if k < 1:
        raise ValueError(f"need at least one rate point, got {k}")
    if k == 1:
        return [0.5]
    return [round(float(q), 4) for q in np.linspace(0.1, 0.9, k)]


def new_run_dir(artifact_dir: Path) -> Path:
    """A directory no other run uses: time stamp plus a random suffix, created exclusively."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_dir = Path(artifact_dir) / f"run-{stamp}-{uuid.uuid4().hex[:10]}"
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def clip_summary(clip: Clip) -> dict:
    return {
        "source": clip.source,
        "sha256": clip.sha256,
        "width": clip.width,
        "height": clip.height,
        "fps": clip.fps,
        "frames": clip.n_frames,
    }


def new_result(clip: Clip, *, isolation: str, device: str, run_dir: Path | None = None) -> dict:
    """The result skeleton (``status: running``, nothing measured yet) every path fills in."""
    return {
        "status": "running",
        "stage": None,
        "reason": None,
        "clip": clip_summary(clip),
        "isolation": isolation,
        "device": device,
        "evaluator_version": EVALUATOR_VERSION,
        "metrics_version": metrics.METRICS_VERSION,
        "run_dir": None if run_dir is None else str(run_dir),
        "rate_points": [],
        "anchors": {},
        "bd_rate": {},
        "bd": {},
    }


def _fps(n_frames: int, seconds: float) -> float | None:
    return n_frames / seconds if seconds > 0 else None


def measure_rate_point(
    code: str,
    clip: Clip,
    index: int,
    quality: float,
    *,
    runner: CandidateRunner,
    run_dir: Path,
    device: str,
) -> tuple[dict, np.ndarray]:
    """Encode, write, re-read, decode and score one rate point.

    Returns the row for the result and the decoded frames (kept by the caller
    only as long as it needs them).
    """
    system_config = {
        "quality": float(quality),
        "width": clip.width,
        "height": clip.height,
        "fps": float(clip.fps),
        "device": device,
    }
    enc = runner.encode(code, clip.frames, dict(system_config))
    if len(enc.payloads) != clip.n_frames:
        raise CandidateError("encode", f"encoder produced {len(enc.payloads)} payloads for {clip.n_frames} frames")
    info = write_bitstream(run_dir / f"rp{index}_q{quality:.4f}.cfbs", enc.payloads)
    # The decoder gets what is on disk, not what the encoder handed us.
    payloads = read_bitstream(info.path)
    dec = runner.decode(code, payloads, dict(system_config), clip.n_frames)
    decoded = dec.frames
    if not isinstance(decoded, np.ndarray) or decoded.shape[0] != clip.n_frames:
        got = decoded.shape[0] if isinstance(decoded, np.ndarray) else type(decoded).__name__
        raise CandidateError("verify", f"decoder returned {got} frames, expected {clip.n_frames}")
    for i in range(clip.n_frames):
        check_frame(decoded[i], i, clip.height, clip.width)

    scores = metrics.score_frames(clip.frames, decoded, device=device)
    summary = metrics.summarize(scores)
    rate = metrics.rate_stats(info.n_bytes, clip.n_frames, clip.width, clip.height, clip.fps)
    row = {
        "index": index,
        "quality": float(quality),
        "bitstream": str(info.path),
        "bitstream_sha256": info.sha256,
        "bytes": info.n_bytes,
        **rate,
        **summary,
        "encode_seconds": enc.seconds,
        "decode_seconds": dec.seconds,
        "encode_fps": _fps(clip.n_frames, enc.seconds),
        "decode_fps": _fps(clip.n_frames, dec.seconds),
        "encode_peak_rss_bytes": enc.peak_rss_bytes,
        "decode_peak_rss_bytes": dec.peak_rss_bytes,
        "per_frame": {
            "psnr_rgb": scores.psnr_rgb.tolist(),
            "psnr_y": scores.psnr_y.tolist(),
            "ssim_y": scores.ssim_y.tolist(),
            "payload_bytes": [len(p) for p in payloads],
        },
    }
    return row, decoded


def bd_against(anchor_points: Sequence[dict], test_points: Sequence[dict], metric: str = BD_METRIC) -> dict:
    """BD-rate and BD-PSNR of ``test`` against ``anchor`` on (kbps, metric) curves.

    When a figure cannot be computed (too few points, a non-monotonic curve,
    no overlap) it is ``None`` with the reason next to it, never a stand-in.
    """
    anchor_curve = [(p["kbps"], p[metric]) for p in anchor_points]
    test_curve = [(p["kbps"], p[metric]) for p in test_points]
    out: dict = {"metric": metric, "bd_rate_pct": None, "bd_psnr_db": None, "warnings": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out["bd_rate_pct"] = bd_rate(anchor_curve, test_curve)
            out["bd_psnr_db"] = bd_psnr(anchor_curve, test_curve)
        except RDError as exc:
            out["error"] = str(exc)
    out["warnings"] = sorted({str(w.message) for w in caught})
    return out


def evaluate_candidate(
    code: str,
    clip: Clip,
    rate_points: int | Sequence[float] = DEFAULT_RATE_POINTS,
    *,
    runner: CandidateRunner,
    artifact_dir: Path,
    anchors: Sequence[str] = (),
    anchor_cache_dir: Path | None = None,
    device: str = "cpu",
    keep_decoded: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> dict:
    """Measure ``code`` on ``clip`` at each rate point; the shape of ``codecfleet evaluate --json``.

    ``rate_points`` is a count (spread by :func:`quality_points`) or explicit
    qualities in [0, 1]. Bitstreams go to a new directory under
    ``artifact_dir``. ``anchors`` names classic codecs (``x264``, ``x265``,
    ``svtav1``) to compute BD-rate against. ``on_step(description)`` is told
    after each rate point and each anchor curve (for progress display).
    """
    qualities = quality_points(rate_points) if isinstance(rate_points, int) else [float(q) for q in rate_points]
    for q in qualities:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quality {q} is outside [0, 1]")
    started = time.perf_counter()
    run_dir = new_run_dir(artifact_dir)
    result = new_result(clip, isolation=runner.isolation, device=device, run_dir=run_dir)
    decoded_frames: list[np.ndarray] = []
    try:
        for i, q in enumerate(qualities):
            row, decoded = measure_rate_point(code, clip, i, q, runner=runner, run_dir=run_dir, device=device)
            result["rate_points"].append(row)
            if keep_decoded:
                decoded_frames.append(decoded)
            if on_step:
                on_step(f"rate point {i + 1}/{len(qualities)} (quality {q:.3f}) measured")
    except CandidateError as exc:
        result.update(status="failed", stage=exc.stage, reason=exc.reason)
        result["seconds"] = time.perf_counter() - started
        return result

    for codec in anchors:
        points = anchors_mod.anchor_curve(clip, codec, cache_dir=anchor_cache_dir, device=device)
        result["anchors"][codec] = [
            {k: getattr(p, k) for k in p.__dataclass_fields__} for p in points
        ]
        detail = bd_against(result["anchors"][codec], result["rate_points"])
        result["bd"][codec] = detail
        result["bd_rate"][codec] = detail["bd_rate_pct"]
        if on_step:
            on_step(f"anchor {codec} measured")
    result["status"] = "succeeded"
    result["seconds"] = time.perf_counter() - started
    if keep_decoded:
        result["_decoded"] = decoded_frames
    return result


def to_json(result: dict) -> str:
    """The result as JSON, without in-memory extras such as decoded frames."""
    return json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2, sort_keys=False)
