"""``score`` re-reads each bitstream before storing its numbers: the bytes on disk must be
the bytes that were decoded (same sha256 and size, a valid container, one payload per frame)."""

from __future__ import annotations

import pytest

from evaluation.container import sha256_file, write_bitstream
from evaluation.synthetic import synthetic_clip
from tasks.base import StepFailed
from tasks.experiment import _reread


def _row(path, **extra):
    row = {"index": 0, "quality": 0.5, "bitstream": str(path), "bitstream_sha256": sha256_file(path),
           "bytes": path.stat().st_size, "psnr_rgb": 30.0, "psnr_y": 31.0, "psnr_rgb_pooled": 30.0,
           "psnr_y_pooled": 31.0, "ssim_y": 0.9, "encode_seconds": 0.1, "decode_seconds": 0.1}
    row.update(extra)
    return row


@pytest.fixture
def clip():
    return synthetic_clip("mix", width=32, height=32, frames=3, seed=1)


def test_the_stored_numbers_take_bits_from_the_file_on_disk(tmp_path, clip):
    path = tmp_path / "rp0.cfv"
    write_bitstream(path, [b"a" * 10, b"b" * 20, b"c" * 30])
    point = _reread(_row(path), clip)
    assert point.sha256 == sha256_file(path) and point.n_bytes == path.stat().st_size
    assert point.bits == 8 * path.stat().st_size and point.n_frames == 3


def test_a_bitstream_changed_after_decoding_is_refused(tmp_path, clip):
    path = tmp_path / "rp0.cfv"
    write_bitstream(path, [b"a" * 10, b"b" * 20, b"c" * 30])
    row = _row(path)
    other = tmp_path / "other.cfv"
    write_bitstream(other, [b"a" * 10, b"b" * 20, b"d" * 30])  # same size, other bytes
    other.replace(path)
    with pytest.raises(StepFailed) as failed:
        _reread(row, clip)
    assert failed.value.stage == "score" and "changed after it was decoded" in failed.value.reason


def test_a_corrupt_or_short_bitstream_is_refused(tmp_path, clip):
    path = tmp_path / "rp0.cfv"
    write_bitstream(path, [b"a" * 10, b"b" * 20])  # two payloads for three frames
    with pytest.raises(StepFailed, match="holds 2 frames, expected 3"):
        _reread(_row(path), clip)
    row = _row(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StepFailed, match="cannot be re-read"):
        _reread(row, clip)
