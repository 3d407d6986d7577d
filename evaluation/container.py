"""Bitstream container: one rate point's per-frame payloads in one file.

A candidate's encoder returns one ``bytes`` payload per frame; the container
stores them so that the decoder (in a fresh sandbox) can get them back one by
one.  Every byte of the file, framing included, counts toward the bitrate:
the rate is computed from the size of the file on disk.

Layout (version 1; all integers unsigned little-endian)::

    offset        size  field
    ------------  ----  ---------------------------------------------------
    0             4     magic ``b"CFBS"`` (codecfleet bitstream)
    4             1     version, 1
    5             4     frame count N
    9             4     length L_0 of record 0
    13            L_0   payload of record 0 (may be empty)
    ...                 N records in all, each a u32 length then its payload
    end - 4       4     CRC-32 (zlib / ISO-HDLC polynomial) of every byte before it

Overhead is 13 + 4 N bytes.  Payloads are at most 2**32 - 1 bytes each.

The reader accepts exactly this layout and nothing else: a bad magic, an
unsupported version, a header, length prefix or record cut short, a length
running past the end, bytes left over after the last record, or a CRC that
does not match are each a :class:`ContainerError` saying which and where.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = [
    "ContainerError",
    "MAGIC",
    "VERSION",
    "HEADER_SIZE",
    "TRAILER_SIZE",
    "pack",
    "unpack",
    "BitstreamInfo",
    "write_bitstream",
    "read_bitstream",
    "sha256_file",
]

MAGIC = b"CFBS"
VERSION = 1
_HEADER = struct.Struct("<4sBI")
_U32 = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 9
TRAILER_SIZE = _U32.size  # 4
_MAX_U32 = 2**32 - 1


class ContainerError(ValueError):
    """A bitstream cannot be written or read; the message names the source.

    Attributes: ``source`` (path or ``"<bytes>"``) and ``reason``.
    """

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


def pack(payloads: Sequence[bytes]) -> bytes:
    """Serialise per-frame payloads into the container layout (see module docstring)."""
    if isinstance(payloads, (bytes, bytearray, memoryview, str)):
        raise ContainerError(
            "<bytes>", "payloads must be a sequence of bytes objects, not a single bytes/str"
        )
    parts = [b""]  # header placeholder
    count = 0
    for i, payload in enumerate(payloads):
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ContainerError("<bytes>", f"payload {i} is {type(payload).__name__}, expected bytes")
        data = bytes(payload)
        if len(data) > _MAX_U32:
            raise ContainerError("<bytes>", f"payload {i} is {len(data)} bytes, above the 2**32-1 limit")
        parts.append(_U32.pack(len(data)))
        parts.append(data)
        count += 1
    if count > _MAX_U32:
        raise ContainerError("<bytes>", f"{count} payloads, above the 2**32-1 limit")
    parts[0] = _HEADER.pack(MAGIC, VERSION, count)
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def unpack(data: bytes, *, source: str = "<bytes>") -> list[bytes]:
    """Parse a container back into its payloads, rejecting anything malformed.

    Raises
    ------
    ContainerError
        Bad magic, unsupported version, truncation (header, length prefix,
        record or trailer), trailing bytes, or CRC-32 mismatch.
    """
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise ContainerError(source, "empty (0 bytes): not a codecfleet bitstream")
    if n < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise ContainerError(
            source, f"bad magic {data[:4]!r} (expected {MAGIC!r}): not a codecfleet bitstream"
        )
    if n < HEADER_SIZE:
        raise ContainerError(source, f"truncated header: {n} bytes, the header alone is {HEADER_SIZE}")
    _, version, count = _HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise ContainerError(source, f"unsupported version {version} (this reader handles {VERSION})")
    if n < HEADER_SIZE + TRAILER_SIZE:
        raise ContainerError(
            source, f"truncated: {n} bytes, header and CRC trailer need {HEADER_SIZE + TRAILER_SIZE}"
        )

    end = n - TRAILER_SIZE  # records must end exactly here
    stored_crc = _U32.unpack_from(data, end)[0]
    actual_crc = zlib.crc32(memoryview(data)[:end])
    crc_note = "" if stored_crc == actual_crc else "; the CRC-32 does not match either"

    payloads: list[bytes] = []
    pos = HEADER_SIZE
    for i in range(count):
        if pos + _U32.size > end:
            raise ContainerError(
                source,
                f"truncated at record {i} of {count}: its length prefix is missing "
                f"({end - pos} bytes left before the trailer){crc_note}",
            )
        length = _U32.unpack_from(data, pos)[0]
        pos += _U32.size
        if pos + length > end:
            raise ContainerError(
                source,
                f"truncated at record {i} of {count}: length {length} overflows the file "
                f"({end - pos} bytes left before the trailer){crc_note}",
            )
        payloads.append(data[pos : pos + length])
        pos += length
    if pos != end:
        raise ContainerError(
            source, f"{end - pos} trailing bytes after the last of {count} records{crc_note}"
        )
    if stored_crc != actual_crc:
        raise ContainerError(
            source, f"CRC-32 mismatch: stored {stored_crc:08x}, computed {actual_crc:08x} (corrupt bytes)"
        )
    return payloads


@dataclass(frozen=True)
class BitstreamInfo:
    """A bitstream file as found on disk after writing: its size in bytes and SHA-256 (hex)."""

    path: Path
    n_bytes: int
    sha256: str


def write_bitstream(path: str | os.PathLike, payloads: Sequence[bytes]) -> BitstreamInfo:
    """Write payloads to a new container file and measure it from disk.

    The file is created exclusively (``"xb"``): an existing file is never
    overwritten, so two experiments pointed at one fixed path fail loudly
    instead of measuring the same output.  The data is fsynced (file and
    directory), then read back; ``n_bytes`` and ``sha256`` come from that
    re-read, which must also equal what was written and parse cleanly.  On
    failure the partly written file is removed.
    """
    p = Path(path)
    data = pack(payloads)
    try:
        f = open(p, "xb")
    except FileExistsError as exc:
        raise ContainerError(str(p), "refusing to overwrite an existing bitstream file") from exc
    except OSError as exc:
        raise ContainerError(str(p), f"cannot create bitstream file: {exc.strerror or exc}") from exc
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(p.parent)
        on_disk = p.read_bytes()
        if on_disk != data:
            raise ContainerError(
                str(p), f"bytes read back ({len(on_disk)}) differ from bytes written ({len(data)})"
            )
        unpack(on_disk, source=str(p))
    except BaseException:
        p.unlink(missing_ok=True)
        raise
    return BitstreamInfo(path=p, n_bytes=len(on_disk), sha256=hashlib.sha256(on_disk).hexdigest())


def _fsync_dir(directory: Path) -> None:
    # Makes the new directory entry durable too; not every filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_bitstream(path: str | os.PathLike) -> list[bytes]:
    """Read and validate a container file; returns the per-frame payloads."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise ContainerError(str(p), "bitstream file not found") from exc
    except OSError as exc:
        raise ContainerError(str(p), f"cannot read bitstream file: {exc.strerror or exc}") from exc
    return unpack(data, source=str(p))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
