"""One candidate, one clip, K rate points: encode, store, re-read, decode, score.

Every number in the result comes from an artifact that was produced and read
back: bits from the container file on disk, quality from the frames that a
separate decoder instance produced from the payloads *re-read from that file*.
If something cannot be measured the result says ``status: failed`` with the
stage and the reason, and carries no made-up number.

Order is fixed, whatever the candidate does: rate points are measured one at a
time in index order (ascending quality when given as a count; an explicit list
in the order given), each as its encoder session, then its decoder session
(frames in index order), never two sessions of one candidate at once; the
determinism re-decodes come after the last rate point, in index order too.
Trusted memory stays bounded by one payload: see :mod:`evaluation.container`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation import anchors as anchors_mod
from evaluation import metrics
from evaluation.container import open_bitstream, write_bitstream
from evaluation.rd import RDError, bd_psnr, bd_rate, overlap_fraction
from evaluation.results import EvaluationResult, RatePoint
from evaluation.runner import CandidateError, CandidateRunner, check_frame
from evaluation.clip import Clip

EVALUATOR_VERSION = "cf-eval-2"
DEFAULT_RATE_POINTS = 4
#: The default curve of every BD figure: PSNR of luma, as is customary for
#: YUV 4:2:0 anchors (a candidate's chroma errors still show in psnr_rgb and
#: psnr_yuv). Selectable per evaluation/campaign: metrics.FITNESS_METRICS.
BD_METRIC = "psnr_y"
#: Below this overlap of the quality ranges a BD figure is kept but marked
#: unreliable, and is never fitness.
DEFAULT_MIN_OVERLAP = 0.75
#: Decoder determinism check: re-decode "every" rate point, "one" sampled point, or "off".
DETERMINISM_MODES = ("every", "one", "off")
DEFAULT_DETERMINISM = "one"


def frames_digest(frames: np.ndarray) -> tuple[str, list[str]]:
    """sha256 of a decoded clip (shape header, then every frame's bytes) and of each frame."""
    n, h, w, _ = frames.shape
    whole = hashlib.sha256(f"{n}x{h}x{w}x3:uint8\n".encode())
    per_frame = []
    for f in frames:
        data = memoryview(np.ascontiguousarray(f)).cast("B")
        whole.update(data)
        per_frame.append(hashlib.sha256(data).hexdigest())
    return whole.hexdigest(), per_frame


#: Decoded frames scored together: at most this many, and at most
#: :data:`STREAM_BATCH_BYTES` of them (16 QCIF frames, 5 frames of 1080p).
STREAM_BATCH_FRAMES = 16
STREAM_BATCH_BYTES = 32 << 20


class DecodedStream:
    """Takes decoded frames one at a time, in index order (a runner's ``on_frame``),
    and keeps only a batch of them: each full batch is scored against the same
    reference frames and hashed, then its buffer is reused. :meth:`finish` gives
    the per-frame scores of the whole clip (each number as :func:`metrics.score_frames`
    gives it for the whole clip at once: every metric is per frame, pooled after) and
    the digests :func:`frames_digest` gives. Memory: one batch, not the clip.
    ``keep=True`` also keeps every frame (``frames``), for callers that ask for them.
    """

    def __init__(self, reference: np.ndarray, *, device: str, score: bool = True, keep: bool = False):
        n, h, w, _ = reference.shape
        self.reference, self.device, self.score, self.n = reference, device, score, n
        size = max(1, min(STREAM_BATCH_FRAMES, STREAM_BATCH_BYTES // max(1, h * w * 3), n))
        self._batch = np.empty((size, h, w, 3), dtype=np.uint8)
        self._filled = 0
        self._start = 0
        self._next = 0
        self._whole = hashlib.sha256(f"{n}x{h}x{w}x3:uint8\n".encode())
        self.frame_sha256: list[str] = []
        self._parts: list = []
        self.frames: list[np.ndarray] | None = [] if keep else None

    def __call__(self, index: int, frame: np.ndarray) -> None:
        if index != self._next:
            raise CandidateError("verify", f"decoder output arrived as frame {index}, expected frame {self._next}")
        self._batch[self._filled] = frame
        data = memoryview(np.ascontiguousarray(self._batch[self._filled])).cast("B")
        self._whole.update(data)
        self.frame_sha256.append(hashlib.sha256(data).hexdigest())
        if self.frames is not None:
            self.frames.append(self._batch[self._filled].copy())
        self._filled += 1
        self._next += 1
        if self._filled == len(self._batch):
            self._flush()

    def _flush(self) -> None:
        if self._filled and self.score:
            ref = self.reference[self._start:self._start + self._filled]
            self._parts.append(metrics.score_frames(ref, self._batch[:self._filled], device=self.device))
        self._start += self._filled
        self._filled = 0

    def finish(self):
        """``(scores or None, decoded_sha256, per-frame sha256)`` once every frame arrived."""
        self._flush()
        if self._next != self.n:
            raise CandidateError("verify", f"decoder returned {self._next} frames, expected {self.n}")
        scores = metrics.concat_scores(self._parts) if self.score else None
        return scores, self._whole.hexdigest(), self.frame_sha256


def _takes_on_frame(decode) -> bool:
    import inspect

    try:
        params = inspect.signature(decode).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "on_frame" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def stream_decode(runner: CandidateRunner, code: str, payloads, config: dict, n_frames: int, sink):
    """``runner.decode`` with every frame handed to ``sink(index, frame)`` as it arrives.
    A runner without ``on_frame`` (a test double, a wrapper) decodes the whole clip
    first; its frames are then checked and handed over one at a time."""
    if _takes_on_frame(runner.decode):
        dec = runner.decode(code, payloads, config, n_frames, on_frame=sink)
        if dec.frames is None:
            return dec
        frames = dec.frames  # a runner that took on_frame but kept the clip anyway
    else:
        dec = runner.decode(code, payloads, config, n_frames)
        frames = dec.frames
        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[0] != n_frames:
            got = frames.shape[0] if isinstance(frames, np.ndarray) and frames.ndim else type(frames).__name__
            raise CandidateError("verify", f"decoder returned {got} frames, expected {n_frames}")
        h, w = int(config["height"]), int(config["width"])
        for i in range(n_frames):
            sink(i, check_frame(frames[i], i, h, w))
    dec.frames = None
    return dec


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


def unmeasured_result(clip: Clip, *, isolation: str, device: str, status: str, stage: str | None,
                      reason: str | None) -> EvaluationResult:
    """A result with nothing measured: the candidate was refused before its first rate point."""
    return EvaluationResult(
        status=status, stage=stage, reason=reason, clip=clip_summary(clip), isolation=isolation, device=device,
        evaluator_version=EVALUATOR_VERSION, metrics_version=metrics.METRICS_VERSION, run_dir=None, metric=BD_METRIC,
    )


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
    already_measured: Callable[[str], dict | None] | None = None,
    keep_decoded: bool = False,
) -> tuple[RatePoint, np.ndarray | None]:
    """Encode, write, re-read, decode and score one rate point.

    Returns the point and, with ``keep_decoded``, the decoded
    frames (else None: they are scored as they arrive and not kept, see
    :class:`DecodedStream`).

    ``already_measured(sha256)``: asked once the bitstream is written and hashed;
    when it returns a dict (``same_as``, or ``reused_measurement_id`` and
    ``reused_from``), these bytes were already decoded by this decoder (earlier in
    this run, or stored), so they are not decoded again: the point holds the
    encode's numbers plus that dict, and the frames are None.
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
    # Streamed: payloads go to the file one at a time (the sandbox runner keeps them
    # in a spool file, not in memory), and come back one at a time for the decoder.
    info = write_bitstream(run_dir / f"rp{index}_q{quality:.4f}.cfbs", enc.payloads)
    known = already_measured(info.sha256) if already_measured is not None else None
    if known is not None:
        return RatePoint(
            index=index, quality=float(quality), bitstream=str(info.path), bitstream_sha256=info.sha256,
            bytes=info.n_bytes, encode_seconds=enc.seconds, encode_fps=_fps(clip.n_frames, enc.seconds),
            encode_peak_rss_bytes=enc.peak_rss_bytes, **known,
        ), None
    # The decoder gets what is on disk, not what the encoder handed us. Its frames are
    # scored and hashed as they arrive, a batch at a time: never the whole decoded clip.
    payloads = open_bitstream(info.path)
    stream = DecodedStream(clip.frames, device=device, keep=keep_decoded)
    dec = stream_decode(runner, code, payloads, dict(system_config), clip.n_frames, stream)
    scores, decoded_sha256, frame_sha256 = stream.finish()
    summary = metrics.summarize(scores)
    decoded = np.stack(stream.frames) if keep_decoded else None
    rate = metrics.rate_stats(info.n_bytes, clip.n_frames, clip.width, clip.height, clip.fps)
    point = RatePoint(
        index=index,
        quality=float(quality),
        bitstream=str(info.path),
        bitstream_sha256=info.sha256,
        bytes=info.n_bytes,
        **rate,
        **summary,
        encode_seconds=enc.seconds,
        decode_seconds=dec.seconds,
        encode_fps=_fps(clip.n_frames, enc.seconds),
        decode_fps=_fps(clip.n_frames, dec.seconds),
        encode_peak_rss_bytes=enc.peak_rss_bytes,
        decode_peak_rss_bytes=dec.peak_rss_bytes,
        decoded_sha256=decoded_sha256,
        per_frame={
            "psnr_rgb": scores.psnr_rgb.tolist(),
            "psnr_y": scores.psnr_y.tolist(),
            "ssim_y": scores.ssim_y.tolist(),
            **(
                {"psnr_u": scores.psnr_u.tolist(), "psnr_v": scores.psnr_v.tolist(),
                 "psnr_yuv": scores.psnr_yuv.tolist()}
                if scores.has_yuv else {}
            ),
            "payload_bytes": list(payloads.lengths),
            "decoded_sha256": frame_sha256,
        },
    )
    return point, decoded


def verify_determinism(
    code: str,
    clip: Clip,
    rows: Sequence[RatePoint | Mapping],
    *,
    runner: CandidateRunner,
    device: str,
    mode: str = DEFAULT_DETERMINISM,
    rng: random.Random | None = None,
) -> dict:
    """Decode rate points' bitstreams a second time, each in a fresh sandbox, and
    require frames bit-identical to the first decode (``decoded_sha256``).
    ``rows``: the points, or their JSON (a fleet worker's sidecar files).

    ``mode``: ``every`` rate point, ``one`` sampled point (drawn by ``rng``,
    a system random source by default, so a candidate cannot know which), or
    ``off``. The bitstream is re-read from its file. A mismatch raises
    :class:`CandidateError` at stage ``verify`` naming the rate point and the
    first differing frame. Returns the check's record: mode, points checked,
    seconds spent re-decoding (its cost) and the first decodes' seconds.
    """
    if mode not in DETERMINISM_MODES:
        raise ValueError(f"determinism mode must be one of {DETERMINISM_MODES}, got {mode!r}")
    record = {"mode": mode, "points": [], "seconds": 0.0, "first_decode_seconds": 0.0, "identical": None,
              "point_seconds": {}}
    # A point whose numbers were reused (its bytes were already measured by this
    # decoder, see measure_rate_point) was not decoded in this run: nothing to compare.
    points = [r if isinstance(r, RatePoint) else RatePoint.from_json(r) for r in rows]
    points = [p for p in points if p.decoded_sha256]
    if mode == "off" or not points:
        return record
    chosen = points if mode == "every" else [(rng or random.SystemRandom()).choice(points)]
    started = time.perf_counter()
    for point in chosen:
        system_config = {
            "quality": float(point.quality),
            "width": clip.width,
            "height": clip.height,
            "fps": float(clip.fps),
            "device": device,
        }
        payloads = open_bitstream(Path(point.bitstream))
        point_started = time.perf_counter()
        # Hashed as the frames arrive (never the whole clip held).
        stream = DecodedStream(clip.frames, device=device, score=False)
        try:
            stream_decode(runner, code, payloads, dict(system_config), clip.n_frames, stream)
            _, digest, per_frame = stream.finish()
        except CandidateError as exc:
            if exc.stage != "verify":
                raise
            raise CandidateError("verify", f"nondeterministic decoder: rate point {point.index} decoded a "
                                 f"second time gave other output than the first decode ({exc.reason})") from None
        if digest != point.decoded_sha256:
            first = (point.per_frame or {}).get("decoded_sha256") or []
            diff = next((i for i, (a, b) in enumerate(zip(first, per_frame)) if a != b), None)
            where = f"frame {diff}" if diff is not None else "the frames"
            raise CandidateError(
                "verify",
                f"nondeterministic decoder: rate point {point.index} (quality {point.quality:.3f}) decoded "
                f"from the same bytes in a fresh sandbox gave different {where} than the first decode",
            )
        record["points"].append(int(point.index))
        record["point_seconds"][str(int(point.index))] = time.perf_counter() - point_started
        record["first_decode_seconds"] += float(point.decode_seconds)
    record["seconds"] = time.perf_counter() - started
    record["identical"] = True
    return record


def bd_against(
    anchor_points: Sequence[dict],
    test_points: Sequence[dict],
    metric: str = BD_METRIC,
    *,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> dict:
    """BD-rate and BD-PSNR of ``test`` against ``anchor`` on (kbps, metric) curves.

    Quality values come from :func:`evaluation.metrics.fitness_value` (dB;
    SSIM-type metrics as ``-10 log10(1 - v)``). ``overlap`` is the fraction
    of the wider quality range both curves share; below ``min_overlap`` the
    figure is kept but ``reliable`` is False and it must not be fitness.
    When a figure cannot be computed (too few points, a non-monotonic curve,
    no overlap) it is ``None`` with the reason next to it, never a stand-in.
    """
    def curve(points):
        out = []
        for p in points:
            q = metrics.fitness_value(p, metric)
            if q is None:
                return None
            out.append((p["kbps"], q))
        return out

    anchor_curve, test_curve = curve(anchor_points), curve(test_points)
    out: dict = {"metric": metric, "bd_rate_pct": None, "bd_psnr_db": None, "overlap": None,
                 "reliable": False, "min_overlap": float(min_overlap), "warnings": []}
    if anchor_curve is None or test_curve is None:
        out["error"] = f"{metric} was not measured on every point (YUV metrics need an even frame size)"
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out["overlap"] = overlap_fraction(anchor_curve, test_curve)
            out["bd_rate_pct"] = bd_rate(anchor_curve, test_curve)
            out["bd_psnr_db"] = bd_psnr(anchor_curve, test_curve)
        except RDError as exc:
            out["error"] = str(exc)
    out["warnings"] = sorted({str(w.message) for w in caught})
    out["reliable"] = out["bd_rate_pct"] is not None and out["overlap"] is not None and out["overlap"] >= min_overlap
    if out["bd_rate_pct"] is not None and not out["reliable"]:
        out["warnings"].append(
            f"unreliable: overlap {100 * out['overlap']:.1f} % is below {100 * min_overlap:.0f} %; not used as fitness"
        )
    return out


def measure_candidate(
    code: str,
    clip: Clip,
    rate_points: int | Sequence[float] = DEFAULT_RATE_POINTS,
    *,
    runner: CandidateRunner,
    artifact_dir: Path,
    anchors: Sequence[str] = (),
    anchor_cache_dir: Path | None = None,
    device: str = "cpu",
    on_step: Callable[[str], None] | None = None,
    metric: str = BD_METRIC,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
    determinism: str = DEFAULT_DETERMINISM,
) -> EvaluationResult:
    """Measure ``code`` (already sanitized, or trusted) on ``clip`` at each rate point,
    here and now, with ``runner``; the public entry, which sanitizes and picks the
    runner, is :func:`codecfleet.api.evaluate_candidate`.

    ``rate_points`` is a count (spread by :func:`quality_points`) or explicit
    qualities in [0, 1]. Bitstreams go to a new directory under
    ``artifact_dir``. ``anchors`` names classic codecs (``x264``, ``x265``,
    ``svtav1``) to compute BD-rate against. ``on_step(description)`` is told
    after each rate point and each anchor curve (for progress display).

    ``metric`` (one of :data:`evaluation.metrics.FITNESS_METRICS`) is the quality
    axis of the BD figures; each anchor's points are chosen from a cached dense
    sweep to span the candidate's measured range of it
    (:func:`evaluation.anchors.matched_curve`), and the overlap is reported
    with each figure (``reliable`` when at least ``min_overlap``).
    ``determinism``: after all rate points, decode ``every`` (or ``one``
    sampled) bitstream again in a fresh sandbox; differing frames fail the
    run at stage ``verify``.
    """
    if metric not in metrics.FITNESS_METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(metrics.FITNESS_METRICS)}")
    if determinism not in DETERMINISM_MODES:
        raise ValueError(f"determinism must be one of {DETERMINISM_MODES}, got {determinism!r}")
    qualities = quality_points(rate_points) if isinstance(rate_points, int) else [float(q) for q in rate_points]
    for q in qualities:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quality {q} is outside [0, 1]")
    started = time.perf_counter()
    run_dir = new_run_dir(artifact_dir)
    measured = {"clip": clip_summary(clip), "isolation": runner.isolation, "device": device,
                "evaluator_version": EVALUATOR_VERSION, "metrics_version": metrics.METRICS_VERSION,
                "run_dir": str(run_dir), "metric": metric}
    points: list[RatePoint] = []
    try:
        for i, q in enumerate(qualities):
            point, _ = measure_rate_point(code, clip, i, q, runner=runner, run_dir=run_dir, device=device)
            points.append(point)
            if on_step:
                on_step(f"rate point {i + 1}/{len(qualities)} (quality {q:.3f}) measured")
        checked = verify_determinism(code, clip, points, runner=runner, device=device, mode=determinism)
    except CandidateError as exc:
        # The points measured before the failure stay in the result, with the stage and reason.
        return EvaluationResult(status="failed", stage=exc.stage, reason=exc.reason, rate_points=tuple(points),
                                seconds=time.perf_counter() - started, **measured)

    rows = [p.to_json() for p in points]
    test_q = [metrics.fitness_value(r, metric) for r in rows]
    anchor_points: dict[str, list[dict]] = {}
    bd: dict[str, dict] = {}
    for codec in anchors:
        if any(v is None for v in test_q):
            curve, matched = anchors_mod.anchor_curve(clip, codec, cache_dir=anchor_cache_dir, device=device), None
        else:
            matched = anchors_mod.matched_curve(
                clip, codec, test_q, metric=metric, cache_dir=anchor_cache_dir, device=device
            )
            curve = matched.points
        anchor_points[codec] = [{k: getattr(p, k) for k in p.__dataclass_fields__} for p in curve]
        detail = bd_against(anchor_points[codec], rows, metric, min_overlap=min_overlap)
        if matched is not None:
            detail["anchor_crfs"] = [p.crf for p in curve]
            detail["anchor_swept"] = len(matched.swept)
            detail["reachable"] = matched.reachable
        bd[codec] = detail
        if on_step:
            on_step(f"anchor {codec} measured")
    return EvaluationResult(
        status="succeeded", rate_points=tuple(points), anchors=anchor_points,
        bd_rate={c: d["bd_rate_pct"] for c, d in bd.items()}, bd=bd, determinism=checked,
        seconds=time.perf_counter() - started, **measured,
    )


def clip_set_summary(results: Sequence[Mapping]) -> dict:
    """A clip set's numbers from each clip's result (an :class:`EvaluationResult` or its JSON).

    Per anchor, the set's BD-rate is the mean of the per-clip BD-rates (each clip's
    curve against that anchor's curve on the same clip), as codec papers average
    over their test sequences; never the BD-rate of averaged curves. It is None
    unless every clip has a reliable figure (``missing`` names the clips that lack
    one). ``min_overlap_seen`` is the smallest per-clip overlap.
    """
    out: dict = {"status": "succeeded", "clips": len(results), "bd_rate": {}, "bd": {}, "metric": None}
    failed = [r for r in results if r.get("status") != "succeeded"]
    if failed or not results:
        out["status"] = "failed"
        out["failed_clips"] = [r["clip"]["source"] for r in failed]
    out["metric"] = next((r.get("metric") for r in results if r.get("metric")), None)
    codecs = list(dict.fromkeys(c for r in results for c in r.get("bd", {})))
    for codec in codecs:
        per_clip, missing, overlaps = [], [], []
        for r in results:
            detail = r.get("bd", {}).get(codec) or {}
            value = detail.get("bd_rate_pct") if detail.get("reliable") else None
            per_clip.append(value)
            if value is None:
                missing.append(r["clip"]["source"])
            if detail.get("overlap") is not None:
                overlaps.append(detail["overlap"])
        mean = None if missing else float(np.mean(per_clip))
        out["bd_rate"][codec] = mean
        out["bd"][codec] = {"bd_rate_pct": mean, "per_clip": per_clip, "missing": missing,
                            "min_overlap_seen": min(overlaps) if overlaps else None}
    return out


def to_json(result: EvaluationResult | Mapping) -> str:
    """A result (or its JSON view, or any such dict) as indented JSON text; keys
    starting with ``_`` (in-memory extras) are left out."""
    data = result.to_json() if isinstance(result, EvaluationResult) else result
    return json.dumps({k: v for k, v in data.items() if not k.startswith("_")}, indent=2, sort_keys=False)


# --- the probe: a cheap first stage -------------------------------------------------

#: Frames the probe encodes and decodes: the first of the clip.
PROBE_FRAMES = 2
#: Mean PSNR-Y on the probe frames below which the decoded output is garbage
#: (an all-grey frame scores about 10-15 dB on natural or synthetic content;
#: every working codec at a middle quality is far above).
PROBE_MIN_PSNR_DB = 15.0
#: How much worse than its parent, in dB of PSNR-Y at the probe's rate, a
#: candidate may be before the probe stops it (CODECFLEET_PROBE_MARGIN_DB).
DEFAULT_PROBE_MARGIN_DB = 3.0
PROBE_OUTCOMES = ("passed", "crashed", "wrong_output", "worse_than_parent")


def probe_quality(qualities: Sequence[float]) -> float:
    """The one quality the probe runs at: the experiment's middle rate point
    (the lower middle for an even count), a quality its full run measures too."""
    ordered = sorted(float(q) for q in qualities)
    return ordered[(len(ordered) - 1) // 2]


def probe_candidate(
    code: str,
    clip: Clip,
    quality: float,
    *,
    runner: CandidateRunner,
    run_dir: Path,
    device: str,
    n_frames: int = PROBE_FRAMES,
    min_psnr_db: float = PROBE_MIN_PSNR_DB,
) -> dict:
    """Encode and decode the first ``n_frames`` of ``clip`` at ``quality``, exactly as a
    rate point is measured (files, separate sandboxes), and say whether the candidate
    is worth the full measurement: ``outcome`` ``passed``, ``crashed`` (it raised,
    or did not import), or ``wrong_output`` (wrong count/shape/dtype of frames, or
    PSNR-Y below ``min_psnr_db``), with ``reason`` and the numbers it got.

    Comparing with a parent is :func:`compare_with_parent`, on ``payload_bytes``
    and ``psnr_y`` of this result. A frame-causal codec (the contract hands frames
    in order) produces for its first frames the same payloads in a run of the
    whole clip, so these numbers are comparable frame for frame with the first
    frames of any full measurement at any quality.
    """
    n = max(1, min(n_frames, clip.n_frames))
    head = Clip(source=clip.source, frames=np.ascontiguousarray(clip.frames[:n]), fps=clip.fps)
    probe_dir = Path(run_dir) / "probe"
    probe_dir.mkdir(parents=True, exist_ok=True)
    for partial in probe_dir.glob("rp0_q*.cfbs"):
        partial.unlink()  # a killed probe's file; write_bitstream never overwrites
    out = {"outcome": "passed", "reason": None, "stage": None, "quality": float(quality), "n_frames": n,
           "payload_bytes": None, "frame_bytes": None, "psnr_y": None, "frame_psnr_y": None, "seconds": 0.0}
    started = time.perf_counter()
    try:
        point, _decoded = measure_rate_point(code, head, 0, quality, runner=runner, run_dir=probe_dir, device=device)
    except CandidateError as exc:
        out["seconds"] = time.perf_counter() - started
        outcome = "wrong_output" if exc.stage == "verify" else "crashed"
        out.update(outcome=outcome, stage=exc.stage,
                   reason=f"probe ({n} frames at quality {quality:.3f}): {exc.stage}: {exc.reason}")
        return out
    out["seconds"] = time.perf_counter() - started
    frame_bytes, frame_psnr = list(point.frame_bytes), list(point.frame_psnr_y)
    out.update(payload_bytes=sum(frame_bytes), frame_bytes=frame_bytes, psnr_y=float(np.mean(frame_psnr)),
               frame_psnr_y=frame_psnr, bytes=point.bytes, bitstream=point.bitstream,
               encode_seconds=point.encode_seconds, decode_seconds=point.decode_seconds)
    if out["psnr_y"] < min_psnr_db:
        out.update(outcome="wrong_output", stage="probe",
                   reason=f"probe ({n} frames at quality {quality:.3f}): the decoded frames are not the clip: "
                          f"PSNR-Y {out['psnr_y']:.2f} dB is below {min_psnr_db:g} dB "
                          f"({out['payload_bytes']} payload bytes)")
    return out


def compare_with_parent(
    payload_bytes: int, psnr_y: float, parent_points: Sequence[tuple[int, float]], margin_db: float
) -> dict:
    """Is a probe point (payload bytes and mean PSNR-Y of the first frames) worse than
    its parent by more than ``margin_db``?

    ``parent_points``: the parent's (payload bytes, mean PSNR-Y) of the *same first
    frames* at each of its measured rate points (from its stored per-frame numbers),
    so both sides count the same frames of the same clip the same way. The rule:

    * the parent's PSNR-Y at the probe's rate is interpolated linearly in log(bytes)
      between its two neighbouring points;
    * above the parent's highest rate, the parent's best PSNR-Y stands in (it got
      there with fewer bytes, so this only favours the child);
    * below the parent's lowest rate the two cannot be compared honestly (no
      extrapolation): the probe passes;
    * worse means ``psnr_y < parent_psnr_y - margin_db``.

    Returns ``{"verdict": "worse" | "ok" | "incomparable", "parent_psnr_y": ...,
    "deficit_db": ...}``.
    """
    import math

    pts = sorted((int(b), float(p)) for b, p in parent_points if b > 0)
    if not pts or payload_bytes <= 0:
        return {"verdict": "incomparable", "parent_psnr_y": None, "deficit_db": None}
    if payload_bytes < pts[0][0]:
        return {"verdict": "incomparable", "parent_psnr_y": None, "deficit_db": None}
    if payload_bytes >= pts[-1][0]:
        parent = max(p for _, p in pts)
    else:
        parent = pts[0][1]
        for (b0, p0), (b1, p1) in zip(pts, pts[1:]):
            if b0 <= payload_bytes <= b1:
                if b1 == b0:
                    parent = max(p0, p1)
                else:
                    t = (math.log(payload_bytes) - math.log(b0)) / (math.log(b1) - math.log(b0))
                    parent = p0 + t * (p1 - p0)
                break
    deficit = parent - psnr_y
    return {"verdict": "worse" if deficit > margin_db else "ok", "parent_psnr_y": parent, "deficit_db": deficit}
