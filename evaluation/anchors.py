"""Classic codec anchors: x264, x265 and SVT-AV1 through PyAV's bundled FFmpeg.

An anchor point is measured the way a candidate is: the encoder gets exactly
the clip's RGB frames, the rate is every byte it emitted (the sum of the raw
packet sizes, no container), and the frames a separate decoder returns are
scored by :mod:`evaluation.metrics`, the code that scores candidates.

The classic codecs work in YUV 4:2:0, so the RGB frames are converted with
swscale before encoding and converted back after decoding, with one fixed
matrix and one fixed set of flags both ways (see ``_SWS_*``): BT.709 limited
range, full-chroma input/output interpolation, accurate rounding, bit-exact.
The conversion round trip alone costs about 53 dB RGB-PSNR on smooth content
(8-bit limited-range quantisation); chroma subsampling costs more where the
colour detail is fine. Both are part of what an anchor delivers, so they are
in its score, as they would be in a candidate's that chose 4:2:0.

Encoder settings (fixed, part of every cache key):

* ``x264``: libx264, preset medium, tune psnr, CRF.
* ``x265``: libx265, preset medium, CRF, ``info=0``: without it x265 writes
  its full options string (about 2 kB) into the first packet, which would be
  most of a small clip's rate. x264 has no such switch; its ~0.6 kB version
  SEI stays in the rate, as it would in any x264 stream.
* ``svtav1``: libsvtav1, preset 8 (of 0 slowest .. 13 fastest), CRF, for
  speed. Measured on a 30-frame CIF synthetic clip, two cores: the six-point
  sweep takes 2.0 s at preset 8 and 2.8 s at preset 5, and preset 5 has a
  BD-rate of -19 % against preset 8, so this anchor is a fast SVT-AV1, not
  its best.

All use a 250-frame maximum GOP and a thread setup that does not depend on the
machine (four frame threads; x265 one frame thread, as its frame-parallel
motion search otherwise varies with the core count), so a cached point does
not depend on the host that made it. On hosts with AVX-512, x264 is held to
its AVX2 code, whose output (like its C code's) is the same on every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from av.video.reformatter import ColorRange

from evaluation import metrics, yuv

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from evaluation.clip import Clip

__all__ = [
    "ANCHOR_CODECS",
    "ANCHOR_VERSION",
    "DEFAULT_CRFS",
    "AnchorError",
    "AnchorPoint",
    "anchor_cache_path",
    "anchor_curve",
    "encode_anchor",
    "encoder_settings",
]

ANCHOR_VERSION = "cf-anchor-2"
"""Bump when the conversion, settings or the record format change: it is part
of every cache key, so old cached points are then never returned."""

ANCHOR_CODECS: tuple[str, ...] = ("x264", "x265", "svtav1")

DEFAULT_CRFS: dict[str, tuple[int, ...]] = {
    # The JCT-VC common test conditions' QPs 22..37, plus 42 for the low rates
    # that small clips and young candidates live at, plus 12 and 17 for the high
    # rates that simple transform codecs need to overlap the anchor curve at all.
    "x264": (12, 17, 22, 27, 32, 37, 42),
    "x265": (12, 17, 22, 27, 32, 37, 42),
    # Six CRFs 8 apart over the upper part of SVT-AV1's 1..63 scale: on the
    # test clips their PSNR spans about the range of the x264/x265 sweeps.
    "svtav1": (15, 23, 31, 39, 47, 55, 63),
}

GOP_SIZE = 250
ENCODER_THREADS = 4

# One conversion, used both ways, so that a lossless encode gives back the
# frames up to 8-bit YUV quantisation; swscale's defaults (BT.601, unspecified
# range, fast chroma paths) lose several dB on flat colour. It lives in
# evaluation.yuv because the YUV metrics of candidates use it too.
_SWS_COLORSPACE = yuv.SWS_COLORSPACE
_SWS_FLAGS = yuv.SWS_FLAGS


@dataclass(frozen=True)
class _CodecSpec:
    encoder: str
    decoder: str
    library: str  # file name prefix of the codec library, for its identity
    crf_range: tuple[int, int]
    options: tuple[tuple[str, str], ...]


_SPECS: dict[str, _CodecSpec] = {
    "x264": _CodecSpec(
        encoder="libx264",
        decoder="h264",
        library="libx264",
        crf_range=(0, 51),
        options=(("preset", "medium"), ("tune", "psnr")),
    ),
    "x265": _CodecSpec(
        encoder="libx265",
        decoder="hevc",
        library="libx265",
        crf_range=(0, 51),
        options=(("preset", "medium"), ("x265-params", "log-level=error:info=0:frame-threads=1")),
    ),
    "svtav1": _CodecSpec(
        encoder="libsvtav1",
        decoder="libdav1d",
        library="libSvtAv1Enc",
        crf_range=(1, 63),
        options=(("preset", "8"),),
    ),
}


class AnchorError(RuntimeError):
    """An anchor could not be measured; says which codec, CRF and stage."""

    def __init__(self, codec: str, crf: int, stage: str, reason: str) -> None:
        self.codec = codec
        self.crf = crf
        self.stage = stage
        self.reason = reason
        super().__init__(f"anchor {codec} crf {crf}: {stage} failed: {reason}")


@dataclass(frozen=True)
class AnchorPoint:
    """One measured anchor rate point.

    ``n_bytes`` is the sum of the encoder's packet sizes; ``kbps`` and ``bpp``
    follow :func:`evaluation.metrics.rate_stats`; the quality fields are the
    :func:`evaluation.metrics.summarize` means of per-frame values on the
    decoded RGB frames, except the YUV 4:2:0 PSNRs (``psnr_y420``, ``psnr_u``,
    ``psnr_v``, ``psnr_yuv``), which compare the decoder's own yuv420p planes
    with the planes the encoder was given (no conversion back and forth: the
    numbers x264's own ``--psnr`` would print). ``encode_seconds`` covers RGB->YUV conversion and
    encoding, ``decode_seconds`` decoding and YUV->RGB conversion, both wall
    clock on the host that measured the point, at ``measured_at``.

    The remaining fields say what produced the numbers: ``from_cache`` is true
    when the point was read back from an earlier measurement of the identical
    input and settings (``measured_at`` is then that earlier time).
    """

    codec: str
    crf: int
    n_bytes: int
    kbps: float
    bpp: float
    psnr_rgb: float
    psnr_y: float
    ssim_y: float
    ms_ssim: float
    psnr_y420: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float
    psnr_yuv_pooled: float
    encode_seconds: float
    decode_seconds: float
    clip_sha256: str
    anchor_version: str
    metrics_version: str
    library: str
    measured_at: str
    from_cache: bool


def _spec(codec: str) -> _CodecSpec:
    try:
        return _SPECS[codec]
    except KeyError:
        raise ValueError(
            f"unknown anchor codec {codec!r}; known: {', '.join(ANCHOR_CODECS)}"
        ) from None


def _check_crf(codec: str, crf: int) -> None:
    lo, hi = _spec(codec).crf_range
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not lo <= crf <= hi:
        raise ValueError(f"{codec} CRF must be an integer in [{lo}, {hi}], got {crf!r}")


@functools.lru_cache(maxsize=1)
def _host_has_avx512() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\bavx512f\b", cpuinfo, re.MULTILINE) is not None


def _encoder_options(codec: str) -> dict[str, str]:
    options = dict(_spec(codec).options)
    if codec == "x264" and _host_has_avx512():
        # x264's AVX-512 code gives a different bitstream from run to run for
        # the same input (measured: CRF 32 on a QCIF clip, 40 encodes, four
        # sizes), while its C and AVX2 code agree with each other every time.
        # AVX2 is what every AVX-512 CPU also has.
        options["x264-params"] = "asm=AVX2"
    return options


def encoder_settings(codec: str, crf: int) -> dict:
    """Everything given to the encoder for ``codec`` at ``crf``, as recorded and hashed."""
    spec = _spec(codec)
    _check_crf(codec, crf)
    return {
        "encoder": spec.encoder,
        "decoder": spec.decoder,
        "crf": int(crf),
        "options": _encoder_options(codec),
        "pix_fmt": "yuv420p",
        "gop_size": GOP_SIZE,
        "threads": ENCODER_THREADS,
        "thread_type": "frame",
        "conversion": {
            "colorspace": _SWS_COLORSPACE.name,
            "range": "MPEG",
            "sws_flags": int(_SWS_FLAGS),
        },
    }


@functools.lru_cache(maxsize=None)
def _library_identity(prefix: str) -> str:
    """``name:sha256[:16]`` of the shared library this process loaded for ``prefix``.

    Read from /proc/self/maps so it is the library actually in use (PyAV's
    bundled one, or a system FFmpeg's); the content hash tells two builds with
    the same version number apart. "unmapped" when the code is linked in
    statically (then the libavcodec identity, also in every key, covers it).
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    paths = sorted(set(re.findall(rf"(/\S*/{re.escape(prefix)}[-.]\S*)", maps)))
    if not paths:
        return "unmapped"
    path = Path(paths[0])
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.name}:{digest.hexdigest()[:16]}"


def _versions(codec: str) -> dict:
    spec = _spec(codec)
    return {
        "pyav": av.__version__,
        "ffmpeg": av.ffmpeg_version_info,
        "libavcodec": _library_identity("libavcodec"),
        "libswscale": _library_identity("libswscale"),
        "encoder_library": _library_identity(spec.library),
        "decoder_library": _library_identity("libdav1d") if spec.decoder == "libdav1d" else "libavcodec",
    }


def _time_base(fps: float) -> Fraction:
    rate = Fraction(fps).limit_denominator(100_000)
    if rate <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    return 1 / rate


def _check_clip(clip: Clip) -> None:
    frames = clip.frames
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"clip {clip.source}: frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
        )
    if frames.shape[0] < 1:
        raise ValueError(f"clip {clip.source}: has no frames")
    if clip.width % 2 or clip.height % 2:
        raise ValueError(
            f"clip {clip.source}: {clip.width}x{clip.height} is odd-sized; "
            "4:2:0 anchors need an even width and height"
        )


def _to_yuv420(rgb: np.ndarray) -> av.VideoFrame:
    """One RGB frame as the yuv420p frame the encoders get."""
    return yuv.to_yuv420_frame(rgb)


@contextlib.contextmanager
def _keep_thread_scheduling() -> Iterator[None]:
    """Restore this thread's scheduling policy afterwards: libSvtAv1Enc raises the calling
    thread to SCHED_FIFO 99 when it opens (where it may, e.g. as root), and a worker
    left at real-time priority would run everything after it (metrics, other encodes,
    the sandboxes it starts) able to starve the host."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        try:
            if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
                os.sched_setscheduler(0, policy, param)
        except OSError as exc:
            log.warning("could not restore the thread's scheduling policy after an encode: %s", exc)


def _encode(clip: Clip, codec: str, crf: int) -> tuple[list[bytes], float]:
    with _keep_thread_scheduling():
        return _encode_with(clip, codec, crf)


def _encode_with(clip: Clip, codec: str, crf: int) -> tuple[list[bytes], float]:
    spec = _spec(codec)
    if codec == "svtav1":
        # SVT-AV1 prints its configuration banner to stderr on every encoder
        # open, and only reads its level from this variable; a caller's own
        # setting wins.
        os.environ.setdefault("SVT_LOG", "1")
    started = time.perf_counter()
    try:
        ctx = av.CodecContext.create(spec.encoder, "w")
        ctx.width = clip.width
        ctx.height = clip.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = _time_base(clip.fps)
        ctx.framerate = 1 / ctx.time_base
        ctx.gop_size = GOP_SIZE
        # Frame threads with a fixed count: slice threading (PyAV's default)
        # makes x264 cut each frame into as many slices as the host has cores,
        # so the bitstream would depend on the machine.
        ctx.thread_type = "FRAME"
        ctx.thread_count = ENCODER_THREADS
        ctx.colorspace = int(_SWS_COLORSPACE)
        ctx.color_range = int(ColorRange.MPEG)
        ctx.options = {**_encoder_options(codec), "crf": str(int(crf))}
        ctx.open()
        packets: list[bytes] = []
        for i, rgb in enumerate(clip.frames):
            frame = _to_yuv420(rgb)
            frame.pts = i
            packets.extend(bytes(p) for p in ctx.encode(frame))
        # Flushing returns the frames held back for B-frame reordering and
        # lookahead; they are part of the rate.
        packets.extend(bytes(p) for p in ctx.encode(None))
    except av.FFmpegError as exc:
        raise AnchorError(codec, crf, "encode", f"{spec.encoder}: {exc}") from exc
    return packets, time.perf_counter() - started


def _decode(
    packets: list[bytes], codec: str, crf: int, n_frames: int, source_planes=None
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Decoded RGB frames, seconds, and (with ``source_planes(i)``, the encoder's
    Y, U, V input of frame i) the per-frame MSE of the decoder's native 4:2:0 planes, (3, N)."""
    spec = _spec(codec)
    started = time.perf_counter()
    frames: list[np.ndarray] = []
    plane_mse: list[tuple[float, float, float]] = []
    try:
        ctx = av.CodecContext.create(spec.decoder, "r")
        decoded: list[av.VideoFrame] = []
        for data in packets:
            decoded.extend(ctx.decode(av.Packet(data)))
        decoded.extend(ctx.decode(None))
        for i, frame in enumerate(decoded):
            frames.append(yuv.from_yuv420_frame(frame))
            if source_planes is not None and i < n_frames:
                dist = yuv.planes_of(frame)
                sse = metrics.yuv_plane_sse(source_planes(i), dist)
                plane_mse.append(tuple(e / p.size for e, p in zip(sse, dist)))
    except av.FFmpegError as exc:
        raise AnchorError(codec, crf, "decode", f"{spec.decoder}: {exc}") from exc
    if len(frames) != n_frames:
        raise AnchorError(
            codec, crf, "decode", f"{spec.decoder} returned {len(frames)} frames for {n_frames} encoded"
        )
    mse = np.asarray(plane_mse, dtype=np.float64).T if source_planes is not None else None
    return np.stack(frames), time.perf_counter() - started, mse


def _measure(clip: Clip, codec: str, crf: int, device: str) -> tuple[AnchorPoint, list[int]]:
    """Encode, decode and score once; also returns the packet sizes."""
    _check_clip(clip)
    packets, encode_seconds = _encode(clip, codec, crf)
    n_bytes = sum(len(p) for p in packets)
    if n_bytes == 0:
        raise AnchorError(codec, crf, "encode", "the encoder produced no bytes")
    decoded, decode_seconds, plane_mse = _decode(
        packets, codec, crf, clip.n_frames, source_planes=lambda i: yuv.to_yuv420_planes(clip.frames[i])
    )
    scores = metrics.score_frames(clip.frames, decoded, device=device, yuv=False)
    scores.mse_y420, scores.mse_u, scores.mse_v = plane_mse
    summary = metrics.summarize(scores)
    rate = metrics.rate_stats(n_bytes, clip.n_frames, clip.width, clip.height, clip.fps)
    point = AnchorPoint(
        codec=codec,
        crf=int(crf),
        n_bytes=n_bytes,
        kbps=float(rate["kbps"]),
        bpp=float(rate["bpp"]),
        psnr_rgb=float(summary["psnr_rgb"]),
        psnr_y=float(summary["psnr_y"]),
        ssim_y=float(summary["ssim_y"]),
        ms_ssim=float(summary["ms_ssim"]),
        psnr_y420=float(summary["psnr_y420"]),
        psnr_u=float(summary["psnr_u"]),
        psnr_v=float(summary["psnr_v"]),
        psnr_yuv=float(summary["psnr_yuv"]),
        psnr_yuv_pooled=float(summary["psnr_yuv_pooled"]),
        encode_seconds=encode_seconds,
        decode_seconds=decode_seconds,
        clip_sha256=clip.sha256,
        anchor_version=ANCHOR_VERSION,
        metrics_version=metrics.METRICS_VERSION,
        library=_versions(codec)["encoder_library"],
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        from_cache=False,
    )
    return point, [len(p) for p in packets]


def encode_anchor(clip: Clip, codec: str, crf: int, *, device: str = "auto") -> AnchorPoint:
    """Encode ``clip`` with a classic codec at ``crf``, decode it and score it; no cache.

    Parameters
    ----------
    clip : Clip
        Frames (N, H, W, 3) uint8 RGB, even width and height.
    codec : str
        One of :data:`ANCHOR_CODECS`.
    crf : int
        Constant rate factor (x264/x265: 0..51, SVT-AV1: 1..63).
    device : str
        Passed to :func:`evaluation.metrics.score_frames`.

    Raises
    ------
    ValueError
        Unknown codec, CRF out of range, or a clip 4:2:0 cannot hold.
    AnchorError
        The encoder or decoder failed, or the decoder returned a different
        number of frames than were encoded.
    """
    _spec(codec)
    _check_crf(codec, crf)
    return _measure(clip, codec, crf, device)[0]


def _cache_key_material(clip: Clip, codec: str, crf: int) -> dict:
    return {
        "anchor_version": ANCHOR_VERSION,
        "metrics_version": metrics.METRICS_VERSION,
        "clip_sha256": clip.sha256,
        "n_frames": clip.n_frames,
        "width": clip.width,
        "height": clip.height,
        # The rate in kbps depends on the frame rate, which the pixels do not carry.
        "fps": float(clip.fps),
        "codec": codec,
        "settings": encoder_settings(codec, crf),
        "versions": _versions(codec),
    }


def _key(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def anchor_cache_path(cache_dir: Path, clip: Clip, codec: str, crf: int) -> Path:
    """Where the point for ``clip``/``codec``/``crf`` with today's versions is cached."""
    key = _key(_cache_key_material(clip, codec, crf))
    return Path(cache_dir) / clip.sha256[:16] / f"{codec}-crf{int(crf):02d}-{key[:24]}.json"


def _read_cached(path: Path, material: dict) -> AnchorPoint | None:
    """The cached point if ``path`` holds a record made from exactly ``material``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key_material") != material:
        return None
    if record.get("key") != _key(material):
        return None
    point = record.get("point")
    names = {f.name for f in dataclasses.fields(AnchorPoint)}
    if not isinstance(point, dict) or set(point) != names:
        return None
    return AnchorPoint(**{**point, "from_cache": True})


def _write_cached(path: Path, material: dict, point: AnchorPoint, packet_sizes: list[int]) -> None:
    record = {
        "format": "codecfleet-anchor-point",
        "key": _key(material),
        "key_material": material,
        "point": dataclasses.asdict(point),
        "packet_sizes": packet_sizes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        # Readers see either no file or a complete one, even with several
        # workers filling the same cache.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def anchor_curve(
    clip: Clip,
    codec: str,
    *,
    crfs: Sequence[int] | None = None,
    cache_dir: Path | None = None,
    device: str = "auto",
) -> list[AnchorPoint]:
    """Anchor rate-distortion points of ``codec`` on ``clip``, one per CRF, by rising rate.

    ``crfs`` defaults to ``DEFAULT_CRFS[codec]``. With ``cache_dir``, each point
    is looked up in, or stored to, a JSON file whose name and content are keyed
    by the sha256 of: the clip hash, frame count, size and fps; the codec and
    every encoder setting; :data:`ANCHOR_VERSION`,
    :data:`evaluation.metrics.METRICS_VERSION`; the PyAV and FFmpeg versions
    and the content hash of the encoder's and decoder's libraries. A cached
    point is returned only when its recorded key material equals today's in
    full, and it comes back with ``from_cache=True`` and its original
    ``measured_at``.

    Raises
    ------
    ValueError
        Unknown codec, CRF out of range, empty or duplicate CRFs.
    AnchorError
        An encode or decode failed (see :func:`encode_anchor`).
    """
    _spec(codec)
    crfs = DEFAULT_CRFS[codec] if crfs is None else tuple(crfs)
    if not crfs:
        raise ValueError(f"{codec}: need at least one CRF")
    if len(set(crfs)) != len(crfs):
        raise ValueError(f"{codec}: duplicate CRFs in {list(crfs)}")
    for crf in crfs:
        _check_crf(codec, crf)

    points: list[AnchorPoint] = []
    for crf in crfs:
        if cache_dir is None:
            points.append(_measure(clip, codec, crf, device)[0])
            continue
        material = _cache_key_material(clip, codec, crf)
        path = anchor_cache_path(cache_dir, clip, codec, crf)
        point = _read_cached(path, material)
        if point is None:
            point, packet_sizes = _measure(clip, codec, crf, device)
            _write_cached(path, material, point, packet_sizes)
        points.append(point)
    return sorted(points, key=lambda p: (p.n_bytes, p.crf))


# --------------------------------------------------------------------------- matched anchors

#: CRF step of the coarse pass of a matched sweep; the ends of the candidate's
#: range are then refined to every CRF (the dense grid, step 1).
COARSE_STEP = 4
#: At most this many anchor points go into one BD curve.
MAX_MATCHED_POINTS = 8
MIN_MATCHED_POINTS = 4


@dataclass(frozen=True)
class MatchedCurve:
    """Anchor points chosen to span a candidate's measured quality range.

    ``points``: the chosen curve (by rising rate, quality strictly rising).
    ``swept``: every point measured (or read from the cache) to choose them.
    ``overlap``: the fraction of the wider quality range the chosen curve and
    the candidate's share (:func:`evaluation.rd.overlap_fraction`), 0 when
    they do not overlap. ``reachable``: whether the candidate's range lies
    within the qualities the anchor reached at all.
    """

    codec: str
    metric: str
    points: list[AnchorPoint]
    swept: list[AnchorPoint]
    overlap: float
    reachable: bool
    test_range: tuple[float, float]


def point_quality(point: AnchorPoint, metric: str) -> float | None:
    """The y value of ``point`` on a BD curve of ``metric`` (see :func:`evaluation.metrics.fitness_value`)."""
    return metrics.fitness_value(dataclasses.asdict(point), metric)


def _monotone(points: Sequence[AnchorPoint], metric: str) -> list[AnchorPoint]:
    """Points by rising rate whose quality strictly rises (later points that do not improve dropped)."""
    out: list[AnchorPoint] = []
    for p in sorted(points, key=lambda p: (p.n_bytes, -p.crf)):
        q = point_quality(p, metric)
        if q is None:
            continue
        if out and (p.n_bytes == out[-1].n_bytes or q <= point_quality(out[-1], metric)):
            continue
        out.append(p)
    return out


def _overlap(a0: float, a1: float, t0: float, t1: float) -> float:
    span = max(a1 - a0, t1 - t0)
    if span <= 0:
        return 0.0
    return max(0.0, min(a1, t1) - max(a0, t0)) / span


def _thin(points: list[AnchorPoint], metric: str, n: int) -> list[AnchorPoint]:
    """At most ``n`` points, ends kept, inner ones nearest to evenly spaced quality levels."""
    if len(points) <= n:
        return points
    qs = np.array([point_quality(p, metric) for p in points])
    chosen = {0, len(points) - 1}
    for level in np.linspace(qs[0], qs[-1], n)[1:-1]:
        order = np.argsort(np.abs(qs - level))
        for i in order:
            if int(i) not in chosen:
                chosen.add(int(i))
                break
    return [points[i] for i in sorted(chosen)]


def matched_curve(
    clip: Clip,
    codec: str,
    test_qualities: Sequence[float],
    *,
    metric: str = "psnr_y",
    cache_dir: Path | None = None,
    device: str = "auto",
    max_points: int = MAX_MATCHED_POINTS,
) -> MatchedCurve:
    """Anchor points of ``codec`` on ``clip`` chosen to span ``test_qualities`` (the
    candidate's measured values of ``metric``).

    The anchor is swept over its CRF range every :data:`COARSE_STEP`, then at
    every CRF (the dense grid) between the coarse neighbours of each end of the
    candidate's range, each point cached as in :func:`anchor_curve` (so a clip's
    sweep is measured once, whatever candidates come). Of the measured points,
    the ends of the curve are the ones just outside or just inside the
    candidate's range that give the largest overlap, and at most ``max_points``
    (at least 4, refined at every CRF between the ends when fewer) lie between.
    When the candidate's range lies within the anchor's reach the overlap is then
    the candidate span over (candidate span + at most one CRF step each side).
    """
    _spec(codec)
    if len(test_qualities) == 0:
        raise ValueError("no candidate qualities to match")
    t0, t1 = float(min(test_qualities)), float(max(test_qualities))
    lo, hi = _spec(codec).crf_range
    measured: dict[int, AnchorPoint] = {}

    def measure(crfs) -> None:
        todo = sorted({int(c) for c in crfs if lo <= c <= hi} - set(measured))
        if todo:
            for p in anchor_curve(clip, codec, crfs=todo, cache_dir=cache_dir, device=device):
                measured[p.crf] = p

    measure([*range(lo, hi + 1, COARSE_STEP), hi])

    def quality(crf: int) -> float:
        q = point_quality(measured[crf], metric)
        return -math.inf if q is None else q

    # Refine around each end: every CRF between the coarse neighbours whose
    # qualities bracket it (quality falls as the CRF rises).
    for target in (t0, t1):
        coarse = sorted(measured)
        for a, b in zip(coarse, coarse[1:]):
            qa, qb = quality(a), quality(b)
            if min(qa, qb) <= target <= max(qa, qb):
                measure(range(a + 1, b))
    curve = _monotone(list(measured.values()), metric)
    qs = [point_quality(p, metric) for p in curve]
    reachable = bool(curve) and qs[0] <= t0 and qs[-1] >= t1

    def end_choices(target: float) -> list[int]:
        below = [i for i, q in enumerate(qs) if q <= target]
        above = [i for i, q in enumerate(qs) if q >= target]
        return sorted({*(below[-1:]), *(above[:1])})

    best: tuple[float, int, int, int] | None = None
    for i in end_choices(t0) or [0]:
        for j in end_choices(t1) or [len(curve) - 1]:
            if j <= i:
                continue
            ov = _overlap(qs[i], qs[j], t0, t1)
            key = (round(ov, 9), j - i, i, j)
            if best is None or key > best:
                best = key
    if best is None:  # fewer than two points in reach: take the whole curve
        chosen = curve
    else:
        _, _, i, j = best
        chosen = curve[i : j + 1]
        if len(chosen) < MIN_MATCHED_POINTS and len(chosen) >= 2:
            crfs = sorted(p.crf for p in chosen)
            measure(range(crfs[0], crfs[-1] + 1))
            q_lo, q_hi = point_quality(chosen[0], metric), point_quality(chosen[-1], metric)
            chosen = [p for p in _monotone(list(measured.values()), metric)
                      if q_lo <= point_quality(p, metric) <= q_hi]
    chosen = _thin(chosen, metric, max(MIN_MATCHED_POINTS, max_points))
    cq = [point_quality(p, metric) for p in chosen]
    overlap = _overlap(cq[0], cq[-1], t0, t1) if len(chosen) >= 2 else 0.0
    return MatchedCurve(
        codec=codec,
        metric=metric,
        points=chosen,
        swept=sorted(measured.values(), key=lambda p: p.crf),
        overlap=overlap,
        reachable=reachable,
        test_range=(t0, t1),
    )
