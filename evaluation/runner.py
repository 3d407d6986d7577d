"""Running a candidate codec: the contract every runner honours.

A runner turns candidate source code plus frames into payloads (``encode``) and
payloads into frames (``decode``). The encoder and the decoder are always two
separate module instances, so a decoder can only know what travels in the
bytes. The trusted side times every call itself; nothing a candidate says about
itself is believed.

Two runners exist:

* :class:`InProcessRunner` (here): no isolation at all. It exists for
  trusted code (the reference codecs, benchmarks of a codec's own speed) and
  is only ever used when asked for by name.
* ``sandbox.runner.SandboxRunner``: the same protocol inside bubblewrap,
  seccomp and rlimits. It is the default for anything untrusted.
"""

from __future__ import annotations

import sys
import time
import types
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

STAGES = ("sanitize", "import", "encode", "decode", "verify")

ENCODE_FN = "compress_video_frame"
DECODE_FN = "decompress_video_frame"


class CandidateError(Exception):
    """A fault of the candidate, never retried: where it happened and why.

    ``reason`` is short and specific, fit to be shown to the LLM that wrote
    the candidate, e.g. ``"compress_video_frame returned int, expected bytes"``.
    """

    def __init__(self, stage: str, reason: str):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass
class EncodeOutput:
    payloads: list[bytes]
    seconds: float  # wall time summed over compress calls, timed by the trusted side
    frame_seconds: list[float]
    peak_rss_bytes: int | None  # None: this runner cannot attribute memory to the candidate


@dataclass
class DecodeOutput:
    frames: np.ndarray | None  # (N, H, W, 3) uint8; None when streamed to on_frame
    seconds: float
    frame_seconds: list[float]
    peak_rss_bytes: int | None


class CandidateRunner(Protocol):
    isolation: str

    def encode(self, code: str, frames: np.ndarray, config: dict) -> EncodeOutput: ...

    # ``on_frame(index, frame)``, when a runner takes it: frames are handed over as they
    # arrive (a reused buffer) and ``DecodeOutput.frames`` is None (see evaluation.pipeline).
    def decode(self, code: str, payloads: list[bytes], config: dict, n_frames: int) -> DecodeOutput: ...


def merged_config(module: Any, system_config: dict) -> dict:
    """The candidate's own ``DEFAULT_CONFIG`` with the system's keys on top."""
    defaults = getattr(module, "DEFAULT_CONFIG", None)
    merged = dict(defaults) if isinstance(defaults, dict) else {}
    merged.update(system_config)
    return merged


def check_payload(value: Any, frame_index: int, max_bytes: int | None = None) -> bytes:
    """Validate what ``compress_video_frame`` returned; raise ``CandidateError('encode', ...)``."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise CandidateError(
            "encode",
            f"{ENCODE_FN} returned {type(value).__name__} for frame {frame_index}, expected bytes",
        )
    if max_bytes is not None and len(value) > max_bytes:
        raise CandidateError(
            "encode",
            f"{ENCODE_FN} returned {len(value)} bytes for frame {frame_index}, over the cap of {max_bytes}",
        )
    return value


def check_frame(value: Any, frame_index: int, height: int, width: int) -> np.ndarray:
    """Validate what ``decompress_video_frame`` returned; raise ``CandidateError('verify', ...)``."""
    if not isinstance(value, np.ndarray):
        raise CandidateError(
            "verify",
            f"{DECODE_FN} returned {type(value).__name__} for frame {frame_index}, expected numpy.ndarray",
        )
    if value.shape != (height, width, 3):
        raise CandidateError(
            "verify",
            f"{DECODE_FN} returned shape {value.shape} for frame {frame_index}, expected {(height, width, 3)}",
        )
    if value.dtype != np.uint8:
        raise CandidateError(
            "verify",
            f"{DECODE_FN} returned dtype {value.dtype} for frame {frame_index}, expected uint8",
        )
    return value


def load_module(code: str, role: str) -> types.ModuleType:
    """Import ``code`` as a fresh, real module (``__name__`` set, registered in
    ``sys.modules`` while alive so dataclasses and pickling-free introspection work).

    Each call gives a new, independent instance: module globals are not shared
    between the encoder and the decoder.
    """
    name = f"codecfleet_candidate_{role}_{uuid.uuid4().hex[:12]}"
    module = types.ModuleType(name)
    module.__file__ = f"<candidate:{role}>"
    sys.modules[name] = module
    try:
        exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102 - trusted runner only
    except BaseException as exc:  # a candidate may raise anything, SystemExit included
        sys.modules.pop(name, None)
        raise CandidateError("import", f"importing the candidate raised {type(exc).__name__}: {exc}") from exc
    for fn in (ENCODE_FN, DECODE_FN):
        if not callable(getattr(module, fn, None)):
            sys.modules.pop(name, None)
            raise CandidateError("import", f"the module defines no callable {fn}")
    return module


def _unload(module: types.ModuleType) -> None:
    sys.modules.pop(module.__name__, None)


class InProcessRunner:
    """Runs a candidate in this very process, with no isolation.

    For trusted code only. The encoder and decoder still get separate module
    instances, and every call is timed here.
    """

    isolation = "none (in-process, trusted code only)"

    def encode(self, code: str, frames: np.ndarray, config: dict) -> EncodeOutput:
        module = load_module(code, "encoder")
        try:
            fn = getattr(module, ENCODE_FN)
            cfg = merged_config(module, config)
            payloads: list[bytes] = []
            frame_seconds: list[float] = []
            for i, frame in enumerate(frames):
                # A copy, so a candidate that writes into its input cannot alter the reference.
                frame = np.array(frame, copy=True)
                t0 = time.perf_counter()
                try:
                    out = fn(frame, i, cfg)
                except Exception as exc:
                    raise CandidateError("encode", f"{ENCODE_FN} raised {type(exc).__name__} on frame {i}: {exc}") from exc
                frame_seconds.append(time.perf_counter() - t0)
                payloads.append(check_payload(out, i))
            return EncodeOutput(payloads, float(sum(frame_seconds)), frame_seconds, None)
        finally:
            _unload(module)

    def decode(self, code: str, payloads: list[bytes], config: dict, n_frames: int, *, on_frame=None) -> DecodeOutput:
        if len(payloads) != n_frames:
            raise CandidateError("verify", f"bitstream holds {len(payloads)} frames, expected {n_frames}")
        module = load_module(code, "decoder")
        try:
            fn = getattr(module, DECODE_FN)
            cfg = merged_config(module, config)
            height, width = int(config["height"]), int(config["width"])
            out_frames = np.empty((n_frames, height, width, 3), dtype=np.uint8) if on_frame is None else None
            frame_seconds: list[float] = []
            for i, payload in enumerate(payloads):
                t0 = time.perf_counter()
                try:
                    frame = fn(payload, i, cfg)
                except Exception as exc:
                    raise CandidateError("decode", f"{DECODE_FN} raised {type(exc).__name__} on frame {i}: {exc}") from exc
                frame_seconds.append(time.perf_counter() - t0)
                check_frame(frame, i, height, width)
                if on_frame is not None:
                    on_frame(i, frame)
                else:
                    out_frames[i] = frame
            return DecodeOutput(out_frames, float(sum(frame_seconds)), frame_seconds, None)
        finally:
            _unload(module)
