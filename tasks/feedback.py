"""What a prompt states besides earlier candidates, read once for both generation paths
(a campaign in this process, and the fleet's ``generate`` task): each anchor's measured
sweep on the clip, and the limits candidates run under."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session


def anchor_points(session: Session, clip_sha256: str) -> dict:
    """Each anchor's stored sweep on the clip (codec -> AnchorPoint tuple by CRF), for
    the current anchor and metrics versions; the newest row per CRF."""
    from db.models import AnchorResult
    from evaluation.anchors import ANCHOR_VERSION
    from evaluation.metrics import METRICS_VERSION
    from generation import AnchorPoint

    rows = session.execute(
        sa.select(AnchorResult.codec, AnchorResult.crf, AnchorResult.kbps, AnchorResult.psnr_y, AnchorResult.ssim_y)
        .where(
            AnchorResult.clip_sha256 == clip_sha256,
            AnchorResult.anchor_version == ANCHOR_VERSION,
            AnchorResult.metrics_version == METRICS_VERSION,
        )
        .order_by(AnchorResult.codec, AnchorResult.crf, AnchorResult.id.desc())
    ).all()
    out: dict[str, dict[int, AnchorPoint]] = {}
    for codec, crf, kbps, psnr_y, ssim_y in rows:
        out.setdefault(codec, {}).setdefault(crf, AnchorPoint(crf, kbps, psnr_y, ssim_y))
    return {codec: tuple(points[c] for c in sorted(points)) for codec, points in out.items()}


def candidate_limits(device: str):
    """The limits candidates run under (the sandbox's and the sanitizer's defaults)."""
    from generation import Limits
    from sandbox.runner import Limits as SandboxLimits
    from sandbox.sanitize import MAX_BYTES_DEFAULT

    lim = SandboxLimits()
    return Limits(
        call_seconds=lim.call_seconds,
        import_seconds=lim.import_seconds,
        session_seconds=lim.total_seconds,
        max_code_bytes=MAX_BYTES_DEFAULT,
        max_payload_bytes=lim.max_payload_bytes,
        max_bitstream_bytes=getattr(lim, "max_bitstream_bytes", None),
        memory_bytes=lim.address_space_bytes if device == "cpu" else None,
        tmp_bytes=lim.tmpfs_bytes,
    )
