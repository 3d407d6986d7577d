"""What a measurement gives: one rate point, one evaluation. The one shape each has.

:class:`RatePoint` is one measured rate point; :class:`EvaluationResult` is one
candidate measured on one clip. The pipeline builds them as it measures
(:func:`evaluation.pipeline.measure_candidate`), the fleet builds them from the
stored rows (:func:`codecfleet.fleet.experiment_result`; the database's reads of
rate points, :func:`db.results.stored_points`, give the same ``RatePoint``), and
``to_json()`` gives the dict that ``codecfleet evaluate --json``, the sidecar
files of a fleet worker and ``Handle.result()`` carry.

A key that one source does not have is not in its JSON at all (rather than
``null``): a field left at :data:`UNSET` is omitted. A measured point has
``per_frame`` and ``decoded_sha256``; a stored one has ``peak_rss_bytes``,
``verify_decode_seconds`` and, of ``per_frame``, the series the database keeps
(``psnr_y`` and ``payload_bytes``; none for rows stored before they were kept); a point whose bytes were already decoded by the
same decoder has only its encode's numbers plus where its numbers come from
(``same_as``, or ``reused_measurement_id`` and ``reused_from``).

Both are also read-only mappings over their JSON view (``result["status"]``,
``row["psnr_y"]``), for the many callers and tests that read them as dicts;
each access builds the view afresh, so nothing read out can change the object.

This module imports nothing of the project: the database rows it is built from
are read by duck typing (:meth:`RatePoint.from_measurement`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class _Unset:
    """A field this result's source does not have: left out of its JSON."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


UNSET: Any = _Unset()


def _plain(value: Any) -> Any:
    """JSON-shaped copy: results become their JSON, tuples lists, containers new."""
    if isinstance(value, (RatePoint, EvaluationResult)):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.copy(value)


class _JsonView(Mapping):
    """Read-only ``Mapping`` over ``to_json()`` (built afresh on every access)."""

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not UNSET:
                out[f.name] = self._json_value(f.name, value)
        return out

    def _json_value(self, name: str, value: Any) -> Any:
        return _plain(value)

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()

    __hash__ = None  # mutable dicts inside: not hashable, like the dict it stands for

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_json() == (other.to_json() if isinstance(other, _JsonView) else dict(other))
        return NotImplemented


@dataclass(frozen=True, eq=False)
class RatePoint(_JsonView):
    """One measured rate point of a candidate on a clip.

    Field order is the order of the JSON keys. ``bitstream`` is the file the
    numbers were computed from (its sha256 and size as read back); the rate
    numbers are :func:`evaluation.metrics.rate_stats` of those bytes and the
    quality numbers :func:`evaluation.metrics.summarize` of the decoded frames.
    """

    index: int
    quality: float
    bitstream: str
    bitstream_sha256: str
    bytes: int
    # rate (metrics.rate_stats)
    bits: int = UNSET
    kbps: float = UNSET
    bpp: float = UNSET
    compression_ratio: float = UNSET
    # quality (metrics.summarize), means of per-frame values unless pooled
    psnr_rgb: float = UNSET
    psnr_y: float = UNSET
    psnr_rgb_pooled: float = UNSET
    psnr_y_pooled: float = UNSET
    ssim_y: float = UNSET
    ms_ssim: float | None = UNSET
    ms_ssim_scales: int | None = UNSET
    psnr_capped_frames: int | None = UNSET
    psnr_y420: float | None = UNSET
    psnr_u: float | None = UNSET
    psnr_v: float | None = UNSET
    psnr_yuv: float | None = UNSET
    psnr_y420_pooled: float | None = UNSET
    psnr_u_pooled: float | None = UNSET
    psnr_v_pooled: float | None = UNSET
    psnr_yuv_pooled: float | None = UNSET
    # cost
    encode_seconds: float = UNSET
    decode_seconds: float = UNSET
    encode_fps: float | None = UNSET
    decode_fps: float | None = UNSET
    encode_peak_rss_bytes: int | None = UNSET
    decode_peak_rss_bytes: int | None = UNSET
    #: Stored: the larger of the two peaks above.
    peak_rss_bytes: int | None = UNSET
    #: Stored: the determinism check's second decode of this point (None: not checked).
    verify_decode_seconds: float | None = UNSET
    # what the decoder gave (measured here only)
    decoded_sha256: str = UNSET
    #: Per-frame series: psnr_rgb, psnr_y, ssim_y, [psnr_u, psnr_v, psnr_yuv],
    #: payload_bytes, decoded_sha256 (each a list in frame order).
    per_frame: Mapping[str, list] = UNSET
    # where the numbers come from when these bytes were not decoded here
    #: An earlier rate point of this run with the same bytes.
    same_as: int = UNSET
    #: The stored measurement of these bytes by this decoder, and its experiment.
    reused_measurement_id: int = UNSET
    reused_from: int = UNSET

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RatePoint:
        """The point a ``to_json()`` dict (a sidecar file, a result row) describes."""
        return cls(**data)

    @classmethod
    def from_measurement(cls, m: Any, artifact: Any, *, raw_bytes: int) -> RatePoint:
        """A stored point: ``m`` a measurement row (``db.models.Measurement``, or a
        ``db.results.PointMeasurement`` giving the experiment's own ``rate_index`` and
        ``quality``), ``artifact`` its bitstream's row, ``raw_bytes`` the clip's size
        as uint8 RGB (for ``compression_ratio``). Of the per-frame series only PSNR-Y
        and payload bytes are stored (what probes and prompts compare frame by frame),
        so ``per_frame`` has those two, or is left out for a row stored without them;
        the decoded frames' hash is not stored."""
        psnr_y, payload = getattr(m, "frame_psnr_y", None), getattr(m, "frame_bytes", None)
        per_frame = (
            {"psnr_y": [float(v) for v in psnr_y], "payload_bytes": [int(b) for b in payload]}
            if psnr_y is not None and payload is not None else UNSET
        )
        return cls(
            index=m.rate_index, quality=m.quality, bitstream=artifact.path, bitstream_sha256=artifact.sha256,
            bytes=m.n_bytes, bits=m.bits, kbps=m.kbps, bpp=m.bpp, compression_ratio=raw_bytes / m.n_bytes,
            psnr_rgb=m.psnr_rgb, psnr_y=m.psnr_y, psnr_rgb_pooled=m.psnr_rgb_pooled, psnr_y_pooled=m.psnr_y_pooled,
            ssim_y=m.ssim_y, ms_ssim=m.ms_ssim, ms_ssim_scales=m.ms_ssim_scales,
            psnr_capped_frames=m.psnr_capped_frames, psnr_y420=m.psnr_y420, psnr_u=m.psnr_u, psnr_v=m.psnr_v,
            psnr_yuv=m.psnr_yuv, psnr_yuv_pooled=m.psnr_yuv_pooled,
            encode_seconds=m.encode_seconds, decode_seconds=m.decode_seconds,
            encode_fps=m.encode_fps, decode_fps=m.decode_fps, peak_rss_bytes=m.peak_rss_bytes,
            verify_decode_seconds=m.verify_decode_seconds, per_frame=per_frame,
        )

    @property
    def rate_index(self) -> int:
        """``index`` by the database's name for it (``experiment_points.rate_index``)."""
        return self.index

    @property
    def frame_bytes(self) -> tuple[int, ...]:
        """Payload bytes of every frame, in frame order; empty when not kept."""
        return tuple(int(b) for b in (self.per_frame or {}).get("payload_bytes") or ())

    @property
    def frame_psnr_y(self) -> tuple[float, ...]:
        """PSNR-Y of every frame, in frame order; empty when not kept."""
        return tuple(float(v) for v in (self.per_frame or {}).get("psnr_y") or ())


@dataclass(frozen=True, eq=False)
class EvaluationResult(_JsonView):
    """One candidate measured on one clip at its rate points: what ``codecfleet
    evaluate --json`` prints and ``Handle.result()`` returns (as ``to_json()``).

    Field order is the order of the JSON keys. Measured here, ``run_dir`` and
    ``seconds`` say where the bitstreams are and how long it took; read from the
    database, ``id`` and the fields after it say which experiment it is and
    where it stands in the fleet.
    """

    status: str
    clip: Mapping[str, Any]
    isolation: str | None
    device: str | None
    stage: str | None = None
    reason: str | None = None
    # the fleet's experiment (read from the database only)
    id: int = UNSET
    attempts: int = UNSET
    worker: str | None = UNSET
    waiting_for: str | None = UNSET
    waiting_since: datetime | None = UNSET
    campaign_id: int | None = UNSET
    reused_from: int | None = UNSET
    duplicate_of: int | None = UNSET
    evaluator_version: str = UNSET
    metrics_version: str = UNSET
    run_dir: str | None = UNSET
    ast_hash: str | None = UNSET
    rate_points: tuple[RatePoint, ...] = ()
    #: Per anchor codec, its points (dicts: codec, crf, n_bytes, kbps, bpp, psnr_*, ...).
    anchors: Mapping[str, list] = field(default_factory=dict)
    bd_rate: Mapping[str, float | None] = field(default_factory=dict)
    #: Per anchor codec, the BD figure's detail (see evaluation.pipeline.bd_against).
    bd: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metric: str = "psnr_y"
    #: The determinism check's record (evaluation.pipeline.verify_determinism).
    determinism: Mapping[str, Any] | None = None
    seconds: float = UNSET

    #: Keys in the order ``to_json`` writes them.
    _ORDER = (
        "id", "status", "stage", "reason", "clip", "isolation", "device", "attempts", "worker", "waiting_for",
        "waiting_since", "campaign_id", "reused_from", "duplicate_of", "evaluator_version", "metrics_version",
        "run_dir", "ast_hash", "rate_points", "anchors", "bd_rate", "bd", "metric", "determinism", "seconds",
    )

    def to_json(self) -> dict:
        out = {}
        for name in self._ORDER:
            value = getattr(self, name)
            if value is not UNSET:
                out[name] = self._json_value(name, value)
        return out

    def _json_value(self, name: str, value: Any) -> Any:
        if name == "waiting_since" and isinstance(value, datetime):
            return value.isoformat(timespec="seconds")
        return _plain(value)

    def replace(self, **changes: Any) -> EvaluationResult:
        return dataclasses.replace(self, **changes)


assert set(EvaluationResult._ORDER) == {f.name for f in dataclasses.fields(EvaluationResult)}

__all__ = ["UNSET", "EvaluationResult", "RatePoint"]
