"""Side-by-side crops of the source, the best candidate and x264 at a similar rate (see :func:`make_crops`).

The candidate's frames are re-decoded from its stored bitstream in the sandbox;
x264's are re-encoded with the anchors' settings.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from codecfleet.report.figures import _png_uri
from codecfleet.report.model import AnchorCurve, CropPanel, Crops, RankedExperiment, ReportError


CROP_SIZE = 128
CROP_ZOOM = 2


def x264_decoded_frames(clip: Any, crf: int) -> tuple[np.ndarray, int]:
    """Encode ``clip`` with x264 at ``crf`` exactly as the anchors do, decode it, return (frames, bytes).

    Uses the encoder and decoder of :mod:`evaluation.anchors` (same settings,
    same colour conversion), so the frames are those the anchor point was
    scored on; ``bytes`` is the sum of the packet sizes.
    """
    from evaluation import anchors as anchors_mod

    packets, _ = anchors_mod._encode(clip, "x264", int(crf))
    frames = anchors_mod._decode(packets, "x264", int(crf), clip.n_frames)[0]
    return frames, sum(len(p) for p in packets)


def _detail_window(frame: np.ndarray, width: int, height: int) -> tuple[int, int]:
    """Top-left corner of the ``width`` x ``height`` window with the most luma gradient (where codecs differ)."""
    y = frame.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    energy = np.zeros_like(y)
    energy[:, 1:] += np.abs(np.diff(y, axis=1))
    energy[1:, :] += np.abs(np.diff(y, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = y.shape
    step = 8
    best, corner = -1.0, (0, 0)
    for top in range(0, h - height + 1, step):
        for left in range(0, w - width + 1, step):
            total = (
                integral[top + height, left + width]
                - integral[top, left + width]
                - integral[top + height, left]
                + integral[top, left]
            )
            if total > best:
                best, corner = total, (left, top)
    return corner


def _frame_psnr_y(reference: np.ndarray, decoded: np.ndarray, device: str) -> float:
    from evaluation import metrics

    return float(metrics.score_frames(reference[None], decoded[None], device=device, ms_ssim=False).psnr_y[0])


def _crop_uri(image: np.ndarray, zoom: int) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1), format="png")
    return _png_uri(buf.getvalue())


def make_crops(
    best: RankedExperiment,
    clip: Any,
    x264: AnchorCurve,
    out_dir: Path,
    *,
    prefix: str,
    device: str = "cpu",
    sandbox_mode: str = "strict",
) -> Crops:
    """Side-by-side crops of the source, ``best`` and x264 at a similar rate.

    The candidate's rate point and the x264 point are the pair whose rates are
    closest (in log-rate). The candidate's frames come from its stored
    bitstream, re-read and checked against the artifact's sha256, decoded by
    the candidate's code in a fresh sandbox (never in this process: the code
    is untrusted). x264's come from re-encoding the clip at that point's CRF.
    The crop is the ``CROP_SIZE`` square (or the frame, if smaller) of the
    middle frame with the most detail, zoomed ``CROP_ZOOM`` x by nearest
    neighbour. Captions give the stored rate and mean PSNR-Y, and the PSNR-Y
    of the shown frame measured now on the re-made frames.

    Raises :class:`ReportError` with the reason when a step cannot be done.
    """
    from evaluation import metrics
    from evaluation.anchors import AnchorError
    from evaluation.container import ContainerError, read_bitstream, sha256_file
    from evaluation.runner import CandidateError
    from sandbox.runner import IsolationError, Limits, SandboxRunner

    if best.candidate is None or best.candidate.code is None:
        raise ReportError(f"candidate {best.experiment.candidate_id} has no stored code to decode with")
    if not best.points:
        raise ReportError(f"experiment {best.experiment.id} has no stored rate points")
    if not x264.points:
        raise ReportError(f"no x264 curve to compare with ({x264.note or 'no points'})")
    point, anchor = min(
        ((p, a) for p in best.points for a in x264.points),
        key=lambda pa: (abs(math.log(pa[0].kbps / pa[1].kbps)), pa[0].index),
    )
    path = Path(point.bitstream)
    if not path.is_file():
        raise ReportError(f"the bitstream {path} of experiment {best.stored.measured_by[point.index]} is gone")
    digest = sha256_file(path)
    if digest != point.bitstream_sha256:
        raise ReportError(
            f"the bitstream {path} now has sha256 {digest[:12]}…, the stored artifact {point.bitstream_sha256[:12]}…: "
            "it is not the file that was measured"
        )
    try:
        payloads = read_bitstream(path)
    except ContainerError as exc:
        raise ReportError(f"the bitstream {path} cannot be read: {exc}") from exc

    notes = []
    # The system config the pipeline handed the decoder (quality, size, fps,
    # device) over what the experiment stored; the device is where we run now.
    config = {
        **best.experiment.config,
        "quality": point.quality,
        "width": clip.width,
        "height": clip.height,
        "fps": float(clip.fps),
        "device": device,
    }
    # The device the experiment ran on (provenance's label), not the "auto" it may have asked for.
    measured_on = best.experiment.device or best.experiment.config.get("device")
    if measured_on not in (None, "auto", device):
        notes.append(f"measured on {measured_on}, re-decoded on {device} for the crop")
    try:
        runner = SandboxRunner(Limits(), device=device, mode=sandbox_mode)
        decoded = runner.decode(best.candidate.code, payloads, config, clip.n_frames).frames
    except IsolationError as exc:
        raise ReportError(f"the candidate was not re-decoded: the sandbox is unavailable ({exc})") from exc
    except CandidateError as exc:
        raise ReportError(f"re-decoding the candidate's bitstream failed at {exc.stage}: {exc.reason}") from exc

    redecoded_psnr = float(np.mean(metrics.score_frames(clip.frames, decoded, device=device, ms_ssim=False).psnr_y))
    if abs(redecoded_psnr - point.psnr_y) > 1e-6:
        notes.append(
            f"the re-decoded frames give mean PSNR-Y {redecoded_psnr:.4f} dB, the stored measurement "
            f"{point.psnr_y:.4f} dB: the decoder is not deterministic{' across devices' if notes else ''}"
        )
    try:
        x264_frames, x264_bytes = x264_decoded_frames(clip, anchor.crf)
    except AnchorError as exc:
        raise ReportError(f"x264 could not re-make its frames: {exc}") from exc
    x264_kbps = metrics.rate_stats(x264_bytes, clip.n_frames, clip.width, clip.height, clip.fps)["kbps"]
    if x264_bytes != anchor.n_bytes:
        notes.append(
            f"x264 CRF {anchor.crf} re-encoded to {x264_bytes} bytes, the anchor point has {anchor.n_bytes}: "
            "the shown x264 frame is from the re-encode, the curve from the stored point"
        )

    index = clip.n_frames // 2
    cw, ch = min(CROP_SIZE, clip.width), min(CROP_SIZE, clip.height)
    left, top = _detail_window(clip.frames[index], cw, ch)
    window = (slice(top, top + ch), slice(left, left + cw))
    panels = []
    for name, title, frame, caption in (
        ("source", "source", clip.frames[index], f"frame {index}, {clip.width}x{clip.height}"),
        (
            "candidate",
            f"candidate {best.experiment.candidate_id}",
            decoded[index],
            f"q={point.quality:g}: {point.kbps:.1f} kbps, mean PSNR-Y {point.psnr_y:.2f} dB (stored); "
            f"this frame {_frame_psnr_y(clip.frames[index], decoded[index], device):.2f} dB",
        ),
        (
            "x264",
            f"x264 CRF {anchor.crf}",
            x264_frames[index],
            f"{x264_kbps:.1f} kbps, mean PSNR-Y {anchor.psnr_y:.2f} dB (anchor point); "
            f"this frame {_frame_psnr_y(clip.frames[index], x264_frames[index], device):.2f} dB",
        ),
    ):
        panels.append(CropPanel(title, _crop_uri(np.ascontiguousarray(frame[window]), CROP_ZOOM), caption))
    return Crops(index, (left, top, cw, ch), CROP_ZOOM, tuple(panels), tuple(notes))
