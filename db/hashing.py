"""The hashes that identify what a result depends on: an experiment's config, a
classic anchor's settings, a measurement's decoder. Pure functions of their
arguments (no queries); the lowest of the ``db`` query modules."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from db.models import Experiment


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, no NaN/inf: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(config: Mapping[str, Any], rate_points: Sequence[float]) -> str:
    """sha256 of what determines an experiment's output bytes besides the code and clip.

    Computed over the canonical JSON of ``{"config": config, "rate_points": [...]}``,
    so a lookup by (code, clip, config_hash) only reuses results of the same encodes.
    """
    payload = {"config": dict(config), "rate_points": [float(q) for q in rate_points]}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def settings_hash(settings: Mapping[str, Any], *, anchor_version: str, metrics_version: str) -> str:
    """sha256 identifying a classic-anchor configuration, versions included.

    A new anchor or metrics version yields a new hash, so new numbers are stored
    beside the old ones instead of silently mixing with them.
    """
    payload = {"settings": dict(settings), "anchor_version": anchor_version, "metrics_version": metrics_version}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def decoder_hash(ast_hash: str | None, config: Mapping[str, Any]) -> str:
    """sha256 naming the decoder of a measurement: the candidate's normalised-AST hash
    and the config its ``decompress_video_frame`` is handed (quality, width, height,
    fps, device). Finer than the AST hash alone because the decoder receives that
    config: the same code told another quality (or device) is not provably the same
    function of the bytes, so it is measured anew rather than trusted to match."""
    payload = {"ast_hash": ast_hash, "config": dict(config)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def decoder_config(experiment: Experiment, quality: float) -> dict[str, Any]:
    """The system config the decoder of ``experiment`` is handed at ``quality``
    (as ``evaluation.pipeline.measure_rate_point`` builds it)."""
    clip = experiment.clip
    return {"quality": float(quality), "width": clip.width, "height": clip.height, "fps": float(clip.fps),
            "device": experiment.device}


def experiment_decoder_hash(experiment: Experiment, quality: float) -> str:
    ast_hash = experiment.candidate.ast_hash if experiment.candidate is not None else None
    return decoder_hash(ast_hash, decoder_config(experiment, quality))


__all__ = [
    "canonical_json",
    "config_hash",
    "decoder_config",
    "decoder_hash",
    "experiment_decoder_hash",
    "settings_hash",
]
