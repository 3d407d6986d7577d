"""Frames through the shared-memory slot: the candidate gets its own copy of each
frame, cannot touch the trusted side's frames, and cannot make the trusted side
read past the slot."""

from __future__ import annotations

import numpy as np
import pytest

from _sandbox_testlib import LOSSLESS_CODEC
from evaluation.runner import CandidateError

#: Tries every way to change its input: write to the array, then map every open
#: descriptor writable and fill it with 0xFF, and truncate it. Keeps every frame
#: it was given (as an inter codec keeps its reference) and reports whether they
#: all still hold what they held when given.
INPUT_TAMPERING_CODEC = '''
import mmap
import os
import zlib

KEPT = []


def compress_video_frame(frame, frame_index, config):
    notes = []
    try:
        frame[0, 0, 0] ^= 0xFF
        notes.append("wrote-input")
    except ValueError:
        notes.append("input-read-only")
    original = frame.tobytes()
    KEPT.append((frame, original))
    for fd in range(3, 1100):
        try:
            size = os.fstat(fd).st_size
            if size > 0:
                m = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
                m[:] = b"\\xff" * size
                m.close()
                notes.append("scribbled-slot")
        except (OSError, ValueError):
            pass
        try:
            os.ftruncate(fd, 0)
            notes.append("truncated")
        except OSError:
            pass
    frame.flags.writeable = True  # allowed: the array is the candidate's own copy
    frame[0, 0, 0] ^= 0xFF
    notes.append("wrote-own-copy")
    frame[0, 0, 0] ^= 0xFF
    kept_unchanged = all(f.tobytes() == b for f, b in KEPT[:-1])
    return (" ".join(notes) + f"|{kept_unchanged}|").encode() + zlib.compress(original, 1)


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unused")
'''

#: A decoder that forges the harness's answer: a frame far larger than the slot.
FORGED_FRAME_CODEC = '''
import json
import os
import struct

import numpy as np


def compress_video_frame(frame, frame_index, config):
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    meta = json.dumps({"shape": [1 << 20, 1 << 20, 3], "dtype": "|u1"}).encode()
    os.write(1001, struct.pack("<cQ", b"F", len(meta)) + meta)  # the harness's response pipe
    return np.zeros((config["height"], config["width"], 3), np.uint8)
'''


def _config(frames: np.ndarray) -> dict:
    n, h, w, _ = frames.shape
    return {"quality": 0.5, "width": w, "height": h, "fps": 30.0, "device": "cpu"}


@pytest.fixture
def writable_frames() -> np.ndarray:
    """Writable on purpose: nothing but the sandbox boundary protects them."""
    rng = np.random.default_rng(11)
    return rng.integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)


def test_candidate_cannot_change_the_trusted_frames_through_its_input_or_the_slot(runner, writable_frames):
    import zlib

    before = writable_frames.copy()
    out = runner.encode(INPUT_TAMPERING_CODEC, writable_frames, _config(writable_frames))

    assert np.array_equal(writable_frames, before)
    for i, payload in enumerate(out.payloads):
        notes, kept_unchanged, packed = payload.split(b"|", 2)
        assert notes.split() == [b"input-read-only", b"scribbled-slot", b"wrote-own-copy"], notes  # the attack reached the slot
        assert kept_unchanged == b"True"  # earlier frames it kept did not change under it
        assert zlib.decompress(packed) == before[i].tobytes()  # and each call saw its true frame


def test_candidate_frames_stay_correct_after_it_scribbled_on_the_slot(runner, writable_frames):
    config = _config(writable_frames)
    runner.encode(INPUT_TAMPERING_CODEC, writable_frames, config)

    enc = runner.encode(LOSSLESS_CODEC, writable_frames, config)
    dec = runner.decode(LOSSLESS_CODEC, enc.payloads, config, len(writable_frames))

    assert np.array_equal(dec.frames, writable_frames)


def test_a_forged_frame_larger_than_the_slot_is_refused_before_reading(runner, writable_frames):
    config = _config(writable_frames)
    enc = runner.encode(FORGED_FRAME_CODEC, writable_frames[:1], config)

    with pytest.raises(CandidateError, match=r"malformed frame .*bytes claimed, the slot holds") as err:
        runner.decode(FORGED_FRAME_CODEC, enc.payloads, config, 1)
    assert err.value.stage == "verify"


def test_decoded_float_frame_comes_back_whole_and_fails_the_dtype_check(runner, writable_frames):
    code = LOSSLESS_CODEC.replace(
        '.reshape(config["height"], config["width"], 3)', '.reshape(config["height"], config["width"], 3) / 1.0'
    )
    config = _config(writable_frames)
    enc = runner.encode(code, writable_frames[:1], config)

    with pytest.raises(CandidateError, match=r"returned dtype float64 for frame 0, expected uint8"):
        runner.decode(code, enc.payloads, config, 1)
