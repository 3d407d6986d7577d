"""A clip and its error: the small types :mod:`evaluation.video` (reading, loading) and
:mod:`evaluation.synthetic` (generating) both make, kept here so that the arrow
between those two points one way (``video -> synthetic -> clip``).

A :class:`Clip` is the reference every measurement is made against: exactly the
RGB frames handed to an encoder.  Its identity is the SHA-256 of its decoded
pixels plus their shape, never its file name.  :func:`public_source` is the
name of a clip that may be shown to anyone (a synthetic spec without its seed).
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import re
from dataclasses import dataclass

import numpy as np

from config import UserError

__all__ = ["VideoError", "Clip", "public_source"]


class VideoError(UserError, ValueError):
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

    ``source`` is what may be shown to anyone, generators and candidates
    included: a file path, or a synthetic clip's seedless name.  ``seed`` is
    the synthetic generator's seed (None for files); it is secret when drawn
    by :func:`evaluation.video.draw_secret_seed`.  ``spec`` combines both and is what
    :func:`evaluation.video.load_clip` accepts back to reproduce the frames.
    """

    source: str
    frames: np.ndarray
    fps: float
    seed: int | None = None

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
    def spec(self) -> str:
        """The trusted spec that reproduces the frames (``source`` plus ``,seed=S`` when seeded).

        Never hand it to a generator or a candidate: it may carry a secret seed.
        """
        if self.seed is None:
            return self.source
        return f"{public_source(self.source)},seed={self.seed}"

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


_SEED_SUFFIX = re.compile(r",seed=[^,]*$")


def public_source(spec: str) -> str:
    """``spec`` without its seed: what a synthetic clip may be called in front of a
    generator, a candidate or a report (``synthetic:mix@176x144,seed=S`` ->
    ``synthetic:mix@176x144``). Anything else comes back unchanged."""
    spec = str(spec)
    if not spec.startswith("synthetic:"):
        return spec
    return _SEED_SUFFIX.sub("", spec)
