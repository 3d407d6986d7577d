"""Specification of evaluation.container: the per-rate-point bitstream file."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from evaluation.container import (
    MAGIC,
    VERSION,
    BitstreamInfo,
    ContainerError,
    open_bitstream,
    pack,
    read_bitstream,
    sha256_file,
    unpack,
    write_bitstream,
)

PAYLOADS = [b"\x00first frame", b"", b"\xff" * 300, bytes(range(256))]


def test_round_trip_keeps_every_payload_including_empty_ones():
    assert unpack(pack(PAYLOADS)) == PAYLOADS


def test_zero_frames_round_trip():
    data = pack([])
    assert len(data) == 13
    assert unpack(data) == []


def test_all_empty_payloads_round_trip():
    assert unpack(pack([b"", b"", b""])) == [b"", b"", b""]


def test_layout_is_the_documented_one():
    header = MAGIC + bytes([VERSION]) + struct.pack("<I", 2)
    body = header + struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    assert MAGIC == b"CFBS" and VERSION == 1
    assert pack([b"ab", b""]) == body + struct.pack("<I", zlib.crc32(body))


def test_overhead_is_13_plus_4_bytes_per_frame():
    assert len(pack(PAYLOADS)) == 13 + 4 * len(PAYLOADS) + sum(map(len, PAYLOADS))


def test_pack_accepts_bytearray_and_memoryview():
    assert unpack(pack([bytearray(b"ab"), memoryview(b"cd")])) == [b"ab", b"cd"]


def test_pack_rejects_a_str_payload():
    with pytest.raises(ContainerError, match="payload 1 is str, expected bytes"):
        pack([b"ok", "not bytes"])


def test_pack_rejects_a_single_bytes_object_instead_of_a_sequence():
    with pytest.raises(ContainerError, match="sequence of bytes"):
        pack(b"one frame")


def test_bad_magic_is_rejected():
    data = b"XXXX" + pack(PAYLOADS)[4:]
    with pytest.raises(ContainerError, match="bad magic"):
        unpack(data, source="stream.cfbs")


def test_empty_input_is_rejected():
    with pytest.raises(ContainerError, match=r"empty \(0 bytes\)"):
        unpack(b"")


def test_unsupported_version_is_rejected():
    data = bytearray(pack(PAYLOADS))
    data[4] = 2
    with pytest.raises(ContainerError, match="unsupported version 2"):
        unpack(bytes(data))


def test_every_truncation_is_rejected():
    data = pack(PAYLOADS)
    for cut in range(len(data)):
        with pytest.raises(ContainerError):
            unpack(data[:cut])


def test_truncation_inside_a_record_names_the_record():
    data = pack(PAYLOADS)
    cut_in_record_2 = 9 + (4 + len(PAYLOADS[0])) + (4 + len(PAYLOADS[1])) + 4 + 100
    with pytest.raises(ContainerError, match=r"truncated at record 2 of 4: length 300 overflows"):
        unpack(data[:cut_in_record_2])


def test_every_single_bit_flip_is_rejected():
    data = pack(PAYLOADS)
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(ContainerError):
                unpack(bytes(flipped))


def test_payload_corruption_is_reported_as_a_crc_mismatch():
    data = bytearray(pack(PAYLOADS))
    data[20] ^= 0x10
    with pytest.raises(ContainerError, match="CRC-32 mismatch"):
        unpack(bytes(data), source="run-17/rate-0.cfbs")


def test_length_overflow_is_rejected():
    data = bytearray(pack([b"abc"]))
    data[9:13] = struct.pack("<I", 2**32 - 1)
    with pytest.raises(ContainerError, match=r"truncated at record 0 of 1: length 4294967295 overflows"):
        unpack(bytes(data))


def test_trailing_bytes_are_rejected():
    data = pack([b"abc"])
    with pytest.raises(ContainerError, match="trailing bytes"):
        unpack(data[:-4] + b"junk" + data[-4:])


def test_errors_name_the_source():
    with pytest.raises(ContainerError, match=r"^run-17/rate-0\.cfbs: ") as info:
        unpack(b"nope", source="run-17/rate-0.cfbs")
    assert info.value.source == "run-17/rate-0.cfbs"


# --------------------------------------------------------------------------- files


def test_write_bitstream_measures_the_file_on_disk(tmp_path: Path):
    path = tmp_path / "rate-0.cfbs"
    info = write_bitstream(path, PAYLOADS)
    on_disk = path.read_bytes()
    assert info == BitstreamInfo(path=path, n_bytes=len(on_disk), sha256=hashlib.sha256(on_disk).hexdigest())
    assert info.n_bytes == path.stat().st_size == len(pack(PAYLOADS))


def test_written_bitstream_reads_back(tmp_path: Path):
    path = tmp_path / "rate-0.cfbs"
    write_bitstream(path, PAYLOADS)
    assert read_bitstream(path) == PAYLOADS


def test_write_bitstream_refuses_to_overwrite(tmp_path: Path):
    path = tmp_path / "shared.cfbs"
    first = write_bitstream(path, [b"experiment one"])
    with pytest.raises(ContainerError, match="refusing to overwrite"):
        write_bitstream(path, [b"experiment two"])
    assert sha256_file(path) == first.sha256


def test_write_bitstream_into_a_missing_directory_fails_clearly(tmp_path: Path):
    with pytest.raises(ContainerError, match="cannot create bitstream file"):
        write_bitstream(tmp_path / "absent" / "rate-0.cfbs", PAYLOADS)


def test_write_bitstream_with_a_bad_payload_leaves_no_file(tmp_path: Path):
    path = tmp_path / "rate-0.cfbs"
    with pytest.raises(ContainerError, match="expected bytes"):
        write_bitstream(path, [b"ok", 42])
    assert not path.exists()


def test_read_bitstream_of_a_missing_file_names_it(tmp_path: Path):
    path = tmp_path / "missing.cfbs"
    with pytest.raises(ContainerError, match="bitstream file not found") as info:
        read_bitstream(path)
    assert str(path) in str(info.value)


def test_read_bitstream_rejects_a_truncated_file(tmp_path: Path):
    path = tmp_path / "rate-0.cfbs"
    write_bitstream(path, PAYLOADS)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ContainerError, match=rf"^{path}: truncated at record 3"):
        read_bitstream(path)


def test_read_bitstream_rejects_a_corrupt_file(tmp_path: Path):
    path = tmp_path / "rate-0.cfbs"
    write_bitstream(path, PAYLOADS)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ContainerError, match="CRC-32 mismatch"):
        read_bitstream(path)


def test_sha256_file_matches_hashlib(tmp_path: Path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


# --------------------------------------------------------------------------- streaming


class _LazyPayloads:
    """A sequence that makes each 1 MiB payload when asked (like the runner's spool file)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return bytes([i % 251]) * (1 << 20)


from collections.abc import Sequence as _Seq  # noqa: E402

_Seq.register(_LazyPayloads)


def test_writing_and_reading_hold_one_payload_at_a_time(tmp_path: Path):
    import tracemalloc

    path = tmp_path / "big.cfbs"
    n = 48
    tracemalloc.start()
    try:
        info = write_bitstream(path, _LazyPayloads(n))
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open_bitstream(path) as payloads:
            assert len(payloads) == n and payloads.lengths == [1 << 20] * n
            for i, p in enumerate(payloads):
                assert p[:1] == bytes([i % 251]) and len(p) == 1 << 20
            assert payloads.sha256 == info.sha256 and payloads.n_bytes == info.n_bytes
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.n_bytes == 13 + 4 * n + n * (1 << 20) == path.stat().st_size
    # 48 MiB went through; at most a couple of payloads (and a 1 MiB read buffer) were alive at once.
    assert peak_write < 4 << 20, peak_write
    assert peak_read < 4 << 20, peak_read


def test_open_bitstream_checks_the_whole_file_before_handing_out_a_payload(tmp_path: Path):
    path = tmp_path / "rate-0.cfbs"
    write_bitstream(path, PAYLOADS)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x01  # in the last payload
    path.write_bytes(bytes(data))
    with pytest.raises(ContainerError, match="CRC-32 mismatch"):
        open_bitstream(path)
