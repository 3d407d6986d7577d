"""The one RGB <-> YUV 4:2:0 conversion of the system (swscale through PyAV).

The classic anchors encode what :func:`to_yuv420_frame` makes of the clip's
RGB frames, and their decoders' YUV is turned back into RGB with
:func:`from_yuv420_frame`. YUV metrics (:mod:`evaluation.metrics`) convert a
candidate's RGB frames and the reference with the same function, so the Y, U
and V planes a candidate is scored on are the ones an anchor would have been
given: BT.709 matrix, limited ("MPEG") range, full-chroma interpolation,
accurate rounding, bit-exact.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

__all__ = ["SWS_COLORSPACE", "SWS_FLAGS", "from_yuv420_frame", "planes_of", "to_yuv420_frame", "to_yuv420_planes"]

SWS_COLORSPACE = Colorspace.ITU709
SWS_FLAGS = (
    Interpolation.BILINEAR
    | Interpolation.FULL_CHR_H_INT
    | Interpolation.FULL_CHR_H_INP
    | Interpolation.ACCURATE_RND
    | Interpolation.BITEXACT
)


def to_yuv420_frame(rgb: np.ndarray) -> av.VideoFrame:
    """One (H, W, 3) uint8 RGB frame (full range) as the yuv420p frame the encoders get."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
        format="yuv420p",
        src_colorspace=SWS_COLORSPACE,
        dst_colorspace=SWS_COLORSPACE,
        src_color_range=ColorRange.JPEG,
        dst_color_range=ColorRange.MPEG,
        interpolation=SWS_FLAGS,
    )


def from_yuv420_frame(frame: av.VideoFrame) -> np.ndarray:
    """A decoder's yuv420p frame back to (H, W, 3) uint8 full-range RGB."""
    return frame.reformat(
        format="rgb24",
        src_colorspace=SWS_COLORSPACE,
        dst_colorspace=SWS_COLORSPACE,
        src_color_range=ColorRange.MPEG,
        dst_color_range=ColorRange.JPEG,
        interpolation=SWS_FLAGS,
    ).to_ndarray()


def planes_of(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y (H, W), U and V (H/2, W/2) uint8 planes of a yuv420p frame, without line padding."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    out = []
    for plane in frame.planes:
        w, h = plane.width, plane.height
        buf = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(h, plane.line_size)
        out.append(np.array(buf[:, :w]))
    return out[0], out[1], out[2]


def to_yuv420_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes of one RGB frame after the anchors' conversion (even W and H)."""
    return planes_of(to_yuv420_frame(rgb))
