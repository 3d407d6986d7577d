"""Video input: decoded files and deterministic synthetic clips.

A :class:`Clip` is the reference every measurement is made against: exactly the
RGB frames handed to an encoder.  Its identity is the SHA-256 of its decoded
pixels plus their shape, never its file name, so two files with the same
pixels are the same clip and a re-encoded file is a different one.

Reading (:func:`read_video`)
    Any file PyAV/FFmpeg can decode.  Frames are converted with
    ``frame.to_ndarray(format="rgb24")`` (FFmpeg's swscale; for YUV sources
    this is where the colour conversion happens) and stacked into an
    ``(N, H, W, 3)`` uint8 array.  Display rotation and sample aspect ratio
    are ignored: the coded frames are the reference.  Only the first video
    stream is read.

    Frame rate: the stream's ``average_rate``; when the container does not
    give one, ``guessed_rate``, then ``base_rate``.  If none is a positive
    number the read fails: a rate is needed for kbps and is never invented.

    Damage is an error, never a shorter clip.  A file is reported as corrupt
    when FFmpeg raises while decoding (the message says how many frames were
    decoded first), when the decoder logs an error while concealing damage
    and going on (e.g. an FFV1 slice CRC mismatch; ``strict=False`` turns
    this off), and when decoding reaches the end of the file short of the
    frame count the container announces:

    * ``stream.frames`` when the container stores it (MP4/MOV, AVI, ...):
      exact, any shortfall is an error;
    * otherwise, for Matroska/WebM, the track's ``DURATION`` tag (or the
      segment duration when the file holds a single stream) times the frame
      rate: an estimate, so the file must fall short by more than half a
      frame plus 1 % of the estimate;
    * otherwise nothing is known and nothing is checked.

    The check only applies when decoding ran to the end of the file; a read
    that stopped because ``max_frames`` frames were delivered is not checked.

Synthetic clips (:func:`synthetic_clip`, ``load_clip("synthetic:NAME")``)
    Generated in code from a seeded ``numpy.random.Generator`` so that
    everything runs with no input file.  Same arguments, same pixels, same
    sha256 (on a given numpy version: numpy does not promise identical random
    streams across versions, and the content hash then tells the clips
    apart rather than mixing them).  Contents by name:

    ========  ====================================================================
    mix       camera pan over a textured background, textured moving objects,
              light sensor noise, one scene cut at frame ``N // 2``
    objects   static textured background, textured objects moving and occluding
    pan       camera pan (sub-pixel, both axes) over a textured background
    noise     pan and objects under heavy sensor noise (sigma 8 levels)
    cut       pan and objects with a scene cut at ``N // 3`` and ``2 N // 3``
    ========  ====================================================================
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import os
import re
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.logging
import numpy as np

__all__ = [
    "VideoError",
    "Clip",
    "read_video",
    "SYNTHETIC_NAMES",
    "synthetic_clip",
    "load_clip",
    "write_video",
]


class VideoError(ValueError):
    """A video could not be read or generated; the message names the source.

    Attributes
    ----------
    source : str
        The file path or ``synthetic:NAME`` spec that failed.
    reason : str
        What is wrong, without the source.
    frames_decoded : int or None
        For damage found part-way, how many frames decoded before it.
    """

    def __init__(self, source: str, reason: str, *, frames_decoded: int | None = None):
        self.source = str(source)
        self.reason = reason
        self.frames_decoded = frames_decoded
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True, eq=False)
class Clip:
    """Reference frames and their frame rate.

    ``frames`` is ``(N, H, W, 3)`` uint8 RGB, C-contiguous, and is made
    read-only on construction (its ``writeable`` flag is cleared in place) so
    that nothing downstream can alter the reference it is measured against.
    Clips compare by identity; compare ``sha256`` to compare contents.
    """

    source: str
    frames: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray):
            raise VideoError(self.source, f"frames must be a numpy array, got {type(f).__name__}")
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise VideoError(
                self.source, f"frames must be (N, H, W, 3) uint8, got {f.shape} {f.dtype}"
            )
        if f.shape[0] < 1 or f.shape[1] < 1 or f.shape[2] < 1:
            raise VideoError(self.source, f"frames must be non-empty, got shape {f.shape}")
        if not f.flags.c_contiguous:
            raise VideoError(self.source, "frames must be C-contiguous")
        if not (isinstance(self.fps, numbers.Real) and math.isfinite(self.fps) and self.fps > 0):
            raise VideoError(self.source, f"fps must be a positive finite number, got {self.fps!r}")
        object.__setattr__(self, "fps", float(self.fps))
        f.flags.writeable = False

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @functools.cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of ``f"{N}x{H}x{W}x3:uint8\\n"`` followed by the raw frame bytes."""
        n, h, w, _ = self.frames.shape
        digest = hashlib.sha256(f"{n}x{h}x{w}x3:uint8\n".encode())
        digest.update(memoryview(self.frames).cast("B"))
        return digest.hexdigest()


# --------------------------------------------------------------------------- reading


@contextmanager
def _ffmpeg_error_log() -> Iterator[list]:
    """Collect FFmpeg messages at ERROR level or worse while decoding.

    PyAV discards FFmpeg's log by default, and decoders that conceal damage
    (FFV1 slice CRC mismatches, damaged MPEG macroblocks) say so only there.
    Only ERROR and worse are routed to Python, which keeps PyAV's known
    logging contention negligible.  The level is process-wide: two threads
    reading at once may see each other's messages or lose some.
    """
    previous = av.logging.get_level()
    if previous is None or previous < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    try:
        # local=False: frame-threaded decoders log from their worker threads.
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(previous)


def _frame_rate(stream: av.video.stream.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


_DURATION_TAG = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


def _expected_frames(container, stream, fps: float) -> tuple[float, bool] | None:
    """(frame count the container announces, whether it is exact), or None."""
    if stream.frames and stream.frames > 0:
        return float(stream.frames), True
    if "matroska" not in container.format.name:
        return None
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    seconds = None
    if tag:
        m = _DURATION_TAG.match(tag.strip())
        if m:
            seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    elif len(container.streams) == 1 and container.duration:
        seconds = container.duration / av.time_base
    if seconds is None or seconds <= 0:
        return None
    return seconds * fps, False


def read_video(
    path: str | os.PathLike,
    *,
    start_frame: int = 0,
    max_frames: int | None = None,
    crop_even: bool = True,
    min_size: int = 16,
    strict: bool = True,
) -> Clip:
    """Decode a video file into RGB uint8 frames.

    Parameters
    ----------
    path : str or path-like
        Any file PyAV can decode (first video stream).
    start_frame : int, default 0
        Index of the first frame kept; earlier frames are decoded and dropped
        (no seeking, so the index is exact).
    max_frames : int or None, default None
        Keep at most this many frames; None keeps all to the end of the file.
    crop_even : bool, default True
        Crop an odd last row and/or column so that width and height are even
        (what 4:2:0 codecs need).  With False an odd size is an error.
    min_size : int, default 16
        Smallest accepted width and height, in pixels, after cropping.
    strict : bool, default True
        Treat errors FFmpeg logs while concealing damage as corruption.

    Returns
    -------
    Clip
        ``source`` is ``str(path)``; ``fps`` as described in the module
        docstring.

    Raises
    ------
    VideoError
        Missing file, not a video, no video stream, no frame rate, zero
        decodable frames, ``start_frame`` past the end, corruption part-way
        (with the number of frames decoded), frames shorter than the
        container announces, odd size with ``crop_even=False``, size below
        ``min_size``, or a frame size that changes mid-stream.
    """
    source = str(path)
    if not isinstance(start_frame, int) or start_frame < 0:
        raise VideoError(source, f"start_frame must be an int >= 0, got {start_frame!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise VideoError(source, f"max_frames must be None or an int >= 1, got {max_frames!r}")
    if not isinstance(min_size, int) or min_size < 1:
        raise VideoError(source, f"min_size must be an int >= 1, got {min_size!r}")

    p = Path(path)
    if not p.exists():
        raise VideoError(source, "file not found")
    if p.is_dir():
        raise VideoError(source, "is a directory, not a video file")

    if p.stat().st_size == 0:
        raise VideoError(source, "empty file (0 bytes), not a video")
    with _ffmpeg_error_log() as open_logs:
        try:
            container = av.open(source, mode="r")
        except av.FFmpegError as exc:
            said = _first_error(open_logs)
            detail = f"; FFmpeg said {said}" if said else ""
            raise VideoError(
                source,
                f"not a video PyAV/FFmpeg can open ({type(exc).__name__}: {exc.strerror or exc}{detail})",
            ) from exc

    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoError(source, f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        fps = _frame_rate(stream)
        if fps is None:
            raise VideoError(
                source, "no frame rate in the container (average, guessed and base rate all unknown)"
            )

        kept: list[np.ndarray] = []
        decoded = 0
        size: tuple[int, int] | None = None
        reached_end = True
        error_at: tuple[int, str] | None = None
        seen = 0  # log entries already looked at
        with _ffmpeg_error_log() as logs:
            try:
                for frame in container.decode(stream):
                    if size is None:
                        size = (frame.height, frame.width)
                        _check_size(source, frame.width, frame.height, crop_even, min_size)
                    elif (frame.height, frame.width) != size:
                        raise VideoError(
                            source,
                            f"frame size changes mid-stream at frame {decoded}: "
                            f"{size[1]}x{size[0]} -> {frame.width}x{frame.height}",
                        )
                    if error_at is None and strict and len(logs) > seen:
                        said, seen = _first_error(logs), len(logs)
                        error_at = (decoded, said) if said else None
                    if decoded >= start_frame:
                        rgb = frame.to_ndarray(format="rgb24")
                        if crop_even:
                            rgb = rgb[: rgb.shape[0] & ~1, : rgb.shape[1] & ~1]
                        kept.append(rgb)
                    decoded += 1
                    if max_frames is not None and len(kept) >= max_frames:
                        reached_end = False
                        break
            except av.FFmpegError as exc:
                raise VideoError(
                    source,
                    f"corrupt or truncated video: decoded {decoded} frames before failing "
                    f"({type(exc).__name__}: {exc.strerror or exc})",
                    frames_decoded=decoded,
                ) from exc
            if error_at is None and strict and len(logs) > seen:
                said = _first_error(logs)
                error_at = (decoded, said) if said else None

        damage = f"FFmpeg reported {error_at[1]}" if error_at is not None else None
        if decoded == 0:
            raise VideoError(
                source, "zero decodable frames in the video stream" + (f" ({damage})" if damage else "")
            )
        if reached_end:
            # Checked before logged errors: "announces 6 frames, 2 decoded" says more
            # than the demuxer's "partial file" that usually comes with it.
            expected = _expected_frames(container, stream, fps)
            if expected is not None:
                count, exact = expected
                short = decoded < count if exact else decoded < count - 0.5 - 0.01 * count
                if short:
                    what = "announces" if exact else f"duration suggests at {fps:g} fps about"
                    raise VideoError(
                        source,
                        f"truncated video: the container {what} {count:.0f} frames "
                        f"but only {decoded} decoded" + (f" ({damage})" if damage else ""),
                        frames_decoded=decoded,
                    )
        if error_at is not None:
            raise VideoError(
                source,
                f"corrupt video data: {damage} after about {error_at[0]} cleanly decoded "
                "frames (pass strict=False to accept concealed damage)",
                frames_decoded=error_at[0],
            )
        if not kept:
            raise VideoError(
                source, f"start_frame={start_frame} is past the end: the file has {decoded} frames"
            )

    frames = np.ascontiguousarray(np.stack(kept))
    return Clip(source=source, frames=frames, fps=fps)


def _check_size(source: str, width: int, height: int, crop_even: bool, min_size: int) -> None:
    if not crop_even and (width % 2 or height % 2):
        raise VideoError(
            source, f"odd frame size {width}x{height} (pass crop_even=True to crop to even)"
        )
    w, h = (width & ~1, height & ~1) if crop_even else (width, height)
    if w < min_size or h < min_size:
        cropped = f" ({w}x{h} after cropping to even)" if (w, h) != (width, height) else ""
        raise VideoError(
            source, f"frame size {width}x{height}{cropped} is below the minimum {min_size}x{min_size}"
        )


def _first_error(logs: list) -> str | None:
    """The first captured message at ERROR level or worse, quoted with its origin.

    The list may also hold milder messages when the application has raised
    PyAV's log level itself; those are not damage.
    """
    for level, name, message in logs:
        if level <= av.logging.ERROR:
            return f"{message.strip()!r} ({name})"
    return None


# --------------------------------------------------------------------------- writing


# Pixel formats in order of preference: RGB formats keep an RGB source exact.
_LOSSLESS_RGB_FORMATS = ("rgb24", "bgr24", "bgr0", "rgb0", "gbrp", "yuv444p", "yuv420p")
_DEFAULT_OPTIONS = {
    # Level 3 with slice CRCs lets the decoder detect damaged slices.
    "ffv1": {"level": "3", "slicecrc": "1"},
}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "ffv1",
    options: dict | None = None,
    pix_fmt: str | None = None,
) -> None:
    """Encode ``(N, H, W, 3)`` uint8 RGB frames to a file (mainly for tests).

    The container comes from the file extension.  The default, FFV1 in
    Matroska (``.mkv``) with ``bgr0`` pixels, is lossless: :func:`read_video`
    gives back exactly ``frames``.  ``pix_fmt`` defaults to the first of
    rgb24, bgr24, bgr0, rgb0, gbrp, yuv444p, yuv420p that the codec accepts
    (only the RGB ones are lossless).  ``options`` are codec options, merged
    over FFV1's defaults (level 3, slice CRCs).  Refuses to overwrite an
    existing file.
    """
    source = str(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise VideoError(
            source, f"frames must be (N, H, W, 3) uint8 with N >= 1, got {frames.shape} {frames.dtype}"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise VideoError(source, f"fps must be positive, got {fps!r}")
    if Path(path).exists():
        raise VideoError(source, "refusing to overwrite an existing file")
    try:
        codec_info = av.codec.Codec(codec, "w")
    except Exception as exc:  # PyAV raises UnknownCodecError or ValueError by version
        raise VideoError(source, f"unknown encoder {codec!r}") from exc
    accepted = [f.name for f in (codec_info.video_formats or [])]
    if pix_fmt is None:
        fallback = accepted[0] if accepted else "yuv420p"
        pix_fmt = next((f for f in _LOSSLESS_RGB_FORMATS if f in accepted), fallback)
    merged = {**_DEFAULT_OPTIONS.get(codec, {}), **(options or {})}
    _, h, w, _ = frames.shape
    try:
        with av.open(source, mode="w") as container:
            rate = Fraction(fps).limit_denominator(1001000)
            stream = container.add_stream(codec, rate=rate, options=merged)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except av.FFmpegError as exc:
        raise VideoError(source, f"encoding with {codec} failed ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------- synthetic

SYNTHETIC_NAMES: tuple[str, ...] = ("mix", "objects", "pan", "noise", "cut")

_NAME_SALT = {name: i + 1 for i, name in enumerate(SYNTHETIC_NAMES)}
# (pan, objects, noise sigma in 8-bit levels, number of scenes)
_RECIPES = {
    "mix": (True, True, 2.0, 2),
    "objects": (False, True, 1.5, 1),
    "pan": (True, False, 1.5, 1),
    "noise": (True, True, 8.0, 1),
    "cut": (True, True, 2.0, 3),
}


def _gaussian_table(sigma: float) -> np.ndarray:
    """Quantiles of N(0, sigma^2) at (i + 0.5) / 256: maps uniform bytes to Gaussian noise.

    Drawing bytes and looking them up is several times faster than
    ``Generator.standard_normal`` and has an exactly Gaussian-quantile
    marginal (quantised to 256 levels, far finer than 8-bit rounding needs).
    """
    nd = statistics.NormalDist(0.0, sigma)
    return np.array([nd.inv_cdf((i + 0.5) / 256.0) for i in range(256)], dtype=np.float32)


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth random field in [0, 1): random values on a grid of ``cell`` pixels, smoothstep-interpolated."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    y = np.arange(h, dtype=np.float32) / np.float32(cell)
    x = np.arange(w, dtype=np.float32) / np.float32(cell)
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = y - y0, x - x0
    fy = (fy * fy * (3 - 2 * fy))[:, None]
    fx = (fx * fx * (3 - 2 * fx))[None, :]
    rows = grid[y0] * (1 - fy) + grid[y0 + 1] * fy
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


def _fractal(rng: np.random.Generator, h: int, w: int, largest: float, smallest: float = 3.0) -> np.ndarray:
    """Value-noise octaves from ``largest`` down to ``smallest`` pixels, amplitude ~ sqrt(cell).

    A flatter spectrum than 1/f: enough fine grain to cost bits, as natural texture does.
    """
    total = np.zeros((h, w), np.float32)
    norm = 0.0
    cell = largest
    while cell >= smallest:
        amp = (cell / largest) ** 0.5
        total += np.float32(amp) * _value_noise(rng, h, w, cell)
        norm += amp
        cell /= 2.0
    if norm == 0.0:
        # A texture smaller than the finest octave (tiny sprites on tiny clips): one
        # octave at its own size, rather than 0/0 turned into undefined pixel values.
        total += _value_noise(rng, h, w, max(float(largest), 1.0))
        norm = 1.0
    return total / np.float32(norm)


def _palette(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.2, 1.0, size=3).astype(np.float32)


def _textured_field(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """An RGB float32 image in [0, 255]: fractal luma texture, smooth chroma, a few hard-edged blocks."""
    luma = _fractal(rng, h, w, largest=max(scale / 3.0, 4.0))
    luma = (luma - luma.mean()) * np.float32(1.8) + np.float32(0.5)
    tint = np.stack([_value_noise(rng, h, w, max(scale / 2.0, 4.0)) for _ in range(3)], axis=-1)
    base = _palette(rng)
    img = (np.float32(0.55) * base + np.float32(0.45) * tint) * luma[..., None]
    # Hard-edged flat-ish blocks give the texture real edges (buildings, signs).
    for _ in range(int(rng.integers(2, 6))):
        bh = int(rng.uniform(0.08, 0.3) * scale)
        bw = int(rng.uniform(0.08, 0.4) * scale)
        y, x = int(rng.integers(0, max(1, h - bh))), int(rng.integers(0, max(1, w - bw)))
        colour = _palette(rng)
        detail = np.float32(0.5) + np.float32(0.7) * luma[y : y + bh, x : x + bw, None]
        img[y : y + bh, x : x + bw] = colour * detail * np.float32(0.8)
    return np.clip(img * np.float32(255.0), 0.0, 255.0)


@dataclass
class _Sprite:
    texture: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w, 1) float32 in [0, 1], soft edge
    x0: float
    y0: float
    vx: float
    vy: float


def _make_sprite(rng: np.random.Generator, width: int, height: int) -> _Sprite:
    s = min(width, height)
    h = max(4, int(rng.uniform(0.15, 0.35) * s))
    w = max(4, int(rng.uniform(0.15, 0.45) * s))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    if rng.random() < 0.5:  # ellipse with a one-pixel soft edge
        r = np.sqrt(((yy - cy) / (h / 2.0)) ** 2 + ((xx - cx) / (w / 2.0)) ** 2)
        alpha = np.clip((1.0 - r) * min(h, w) / 2.0, 0.0, 1.0)
    else:
        alpha = np.ones((h, w), np.float32)
    colour = _palette(rng)
    if rng.random() < 0.5:  # stripes/checks: strong structure for motion search
        period = float(rng.uniform(3.0, 10.0))
        angle = float(rng.uniform(0, math.pi))
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        pattern = np.float32(0.5) + np.float32(0.45) * np.sign(np.sin(2 * math.pi * phase))
        second = _palette(rng)
        texture = colour * pattern[..., None] + second * (1 - pattern[..., None])
    else:
        grain = _fractal(rng, h, w, largest=max(h, w) / 3.0, smallest=2.0)
        texture = colour * (np.float32(0.35) + grain[..., None])
    speed = s * float(rng.uniform(0.006, 0.03))
    angle = float(rng.uniform(0, 2 * math.pi))
    return _Sprite(
        texture=np.clip(texture * np.float32(255.0), 0, 255).astype(np.float32),
        alpha=alpha.astype(np.float32)[..., None],
        x0=float(rng.uniform(0, max(1, width - w))),
        y0=float(rng.uniform(0, max(1, height - h))),
        vx=speed * math.cos(angle),
        vy=speed * math.sin(angle),
    )


def _bounce(p: float, span: float) -> int:
    """Position ``p`` folded into [0, span] as if bouncing off both ends."""
    if span <= 0:
        return 0
    p = p % (2 * span)
    return int(round(p if p <= span else 2 * span - p))


class _Scene:
    def __init__(
        self, rng: np.random.Generator, width: int, height: int, n_frames: int, pan: bool, objects: bool
    ):
        s = min(width, height)
        if pan:
            speed = s * float(rng.uniform(0.008, 0.02))
            angle = float(rng.uniform(-0.6, 0.6)) + (math.pi if rng.random() < 0.5 else 0.0)
            self.vx, self.vy = speed * math.cos(angle), speed * math.sin(angle)
        else:
            self.vx = self.vy = 0.0
        # Room for the whole pan plus one pixel for the bilinear neighbour.
        self.ext_x = int(math.ceil(abs(self.vx) * max(n_frames - 1, 0))) + 2
        self.ext_y = int(math.ceil(abs(self.vy) * max(n_frames - 1, 0))) + 2
        self.background = _textured_field(rng, height + self.ext_y, width + self.ext_x, scale=s)
        self.width, self.height = width, height
        n_sprites = int(rng.integers(3, 6)) if objects else 0
        self.sprites = [_make_sprite(rng, width, height) for _ in range(n_sprites)]
        self._top = np.empty((height, width, 3), np.float32)
        self._bottom = np.empty((height, width, 3), np.float32)

    def render(self, t: int, out: np.ndarray) -> None:
        """Frame ``t`` (scene-local) into ``out`` (H, W, 3) float32."""
        h, w = self.height, self.width
        # The camera starts at the side the pan moves away from.
        px = (0.0 if self.vx >= 0 else self.ext_x - 2) + self.vx * t
        py = (0.0 if self.vy >= 0 else self.ext_y - 2) + self.vy * t
        ix, iy = int(math.floor(px)), int(math.floor(py))
        fx, fy = np.float32(px - ix), np.float32(py - iy)
        bg = self.background
        a, b = bg[iy : iy + h, ix : ix + w], bg[iy : iy + h, ix + 1 : ix + 1 + w]
        c, d = bg[iy + 1 : iy + 1 + h, ix : ix + w], bg[iy + 1 : iy + 1 + h, ix + 1 : ix + 1 + w]
        # Bilinear sub-pixel sample, in place: temporaries of a 720p frame cost more than the arithmetic.
        top, bottom = self._top, self._bottom
        np.subtract(b, a, out=top)
        top *= fx
        top += a
        np.subtract(d, c, out=bottom)
        bottom *= fx
        bottom += c
        np.subtract(bottom, top, out=out)
        out *= fy
        out += top
        for sp in self.sprites:
            sh, sw = sp.alpha.shape[:2]
            x = _bounce(sp.x0 + sp.vx * t, w - sw)
            y = _bounce(sp.y0 + sp.vy * t, h - sh)
            region = out[y : y + sh, x : x + sw]
            region += (sp.texture - region) * sp.alpha


def _check_synthetic_args(source: str, name: str, width: int, height: int, frames: int, fps: float) -> None:
    if name not in SYNTHETIC_NAMES:
        raise VideoError(source, f"unknown synthetic clip {name!r}; known: {', '.join(SYNTHETIC_NAMES)}")
    for label, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value < 16:
            raise VideoError(source, f"{label} must be an int >= 16, got {value!r}")
        if value % 2:
            raise VideoError(source, f"{label} must be even, got {value}")
    if not isinstance(frames, int) or frames < 1:
        raise VideoError(source, f"frames must be an int >= 1, got {frames!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise VideoError(source, f"fps must be a positive finite number, got {fps!r}")


def synthetic_clip(
    name: str = "mix",
    *,
    width: int = 352,
    height: int = 288,
    frames: int = 8,
    fps: float = 30.0,
    seed: int = 0,
) -> Clip:
    """Generate a deterministic synthetic clip (see the module docstring for names).

    Parameters
    ----------
    name : str
        One of :data:`SYNTHETIC_NAMES`.
    width, height : int
        Frame size in pixels; even, at least 16.  Object sizes and speeds
        scale with ``min(width, height)``.
    frames : int
        Number of frames, at least 1.
    fps : float
        Nominal frame rate stored in the clip (content does not depend on it).
    seed : int
        Seed of the ``numpy.random.Generator`` (combined with the name).

    Returns
    -------
    Clip
        ``source`` is ``"synthetic:NAME@WxH"`` (``",seed=S"`` appended when
        ``seed != 0``), which :func:`load_clip` accepts back.
    """
    source = f"synthetic:{name}@{width}x{height}" + (f",seed={seed}" if seed else "")
    _check_synthetic_args(source, name, width, height, frames, fps)
    if not isinstance(seed, int) or seed < 0:
        raise VideoError(source, f"seed must be an int >= 0, got {seed!r}")
    pan, objects, sigma, n_scenes = _RECIPES[name]
    n_scenes = min(n_scenes, frames)
    # Scene k starts at floor(k * N / n_scenes): mix (2 scenes) cuts at N // 2.
    starts = [k * frames // n_scenes for k in range(n_scenes)] + [frames]
    rng = np.random.default_rng([seed, _NAME_SALT[name]])
    noise_table = _gaussian_table(sigma)

    out = np.empty((frames, height, width, 3), np.uint8)
    canvas = np.empty((height, width, 3), np.float32)
    noise = np.empty_like(canvas)
    for k in range(n_scenes):
        length = starts[k + 1] - starts[k]
        scene = _Scene(rng, width, height, length, pan=pan, objects=objects)
        for t in range(length):
            scene.render(t, canvas)
            noise_bytes = np.frombuffer(rng.bytes(canvas.size), np.uint8).reshape(canvas.shape)
            np.take(noise_table, noise_bytes, out=noise)
            canvas += noise
            np.clip(canvas, 0.0, 255.0, out=canvas)
            np.rint(canvas, out=canvas)
            out[starts[k] + t] = canvas
    return Clip(source=source, frames=out, fps=float(fps))


# --------------------------------------------------------------------------- loading

_SYNTHETIC_SPEC = re.compile(
    r"^synthetic:(?P<name>[A-Za-z0-9_]+)(?:@(?P<w>\d+)x(?P<h>\d+))?(?:,seed=(?P<seed>\d+))?$"
)


def load_clip(
    spec: str,
    *,
    frames: int | None = None,
    start_frame: int = 0,
    width: int | None = None,
    height: int | None = None,
) -> Clip:
    """Load a clip from a spec: ``synthetic:NAME[@WxH][,seed=S]`` or a file path.

    Synthetic: ``frames`` defaults to 8, the size to ``@WxH``, else
    ``width``/``height``, else 352x288 (a size given both ways must agree).
    ``start_frame=k`` returns frames ``k .. k+frames-1`` of the
    ``k+frames``-frame clip.

    File: decoded with :func:`read_video` (``max_frames=frames``).  ``width``
    and ``height``, when given, must equal the decoded size: frames are never
    rescaled, since the reference must be exactly what was decoded.
    """
    if not isinstance(spec, str) or not spec:
        raise VideoError(str(spec), "clip spec must be a non-empty string")
    if spec.startswith("synthetic:"):
        m = _SYNTHETIC_SPEC.match(spec)
        if not m:
            raise VideoError(spec, "malformed synthetic spec; expected synthetic:NAME[@WxH][,seed=S]")
        w, h = width, height
        if m.group("w") is not None:
            sw, sh = int(m.group("w")), int(m.group("h"))
            if (width is not None and width != sw) or (height is not None and height != sh):
                raise VideoError(
                    spec, f"size {sw}x{sh} in the spec contradicts width={width}, height={height}"
                )
            w, h = sw, sh
        n = 8 if frames is None else frames
        if not isinstance(start_frame, int) or start_frame < 0:
            raise VideoError(spec, f"start_frame must be an int >= 0, got {start_frame!r}")
        if not isinstance(n, int) or n < 1:
            raise VideoError(spec, f"frames must be an int >= 1, got {n!r}")
        clip = synthetic_clip(
            m.group("name"),
            width=352 if w is None else w,
            height=288 if h is None else h,
            frames=start_frame + n,
            seed=int(m.group("seed") or 0),
        )
        if start_frame == 0:
            return clip
        return Clip(source=clip.source, frames=np.ascontiguousarray(clip.frames[start_frame:]), fps=clip.fps)

    clip = read_video(spec, start_frame=start_frame, max_frames=frames)
    if (width is not None and width != clip.width) or (height is not None and height != clip.height):
        raise VideoError(
            spec,
            f"decoded size {clip.width}x{clip.height} differs from the requested "
            f"{width if width is not None else '*'}x{height if height is not None else '*'} (no rescaling)",
        )
    return clip
