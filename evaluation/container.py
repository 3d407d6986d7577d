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

Files are written and read *streaming*: :func:`write_bitstream` writes one
payload at a time as it takes them from any sequence (the sandbox runner's
payloads live in a spool file, not in memory), and :func:`open_bitstream`
checks a whole file in one pass of bounded reads, then hands payloads out one
at a time. The trusted side therefore never holds more than one payload (plus
1 MiB of read buffer), whatever a candidate returned; the total is capped by
the runner as bytes arrive.
"""

from __future__ import annotations

from config import UserError

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Sequence

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
    "open_bitstream",
    "BitstreamPayloads",
    "sha256_file",
]

MAGIC = b"CFBS"
VERSION = 1
_HEADER = struct.Struct("<4sBI")
_U32 = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 9
TRAILER_SIZE = _U32.size  # 4
_MAX_U32 = 2**32 - 1


class ContainerError(UserError, ValueError):
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


def write_bitstream(path: str | os.PathLike, payloads: Iterable[bytes]) -> BitstreamInfo:
    """Write payloads to a new container file, one at a time, and measure it from disk.

    The file is created exclusively (``"xb"``): an existing file is never
    overwritten, so two experiments pointed at one fixed path fail loudly
    instead of measuring the same output.  Payloads are taken one by one from
    ``payloads`` (a sequence; anything else is first made a list), written and
    hashed as they come.  The data is fsynced (file and directory), then the
    file is re-read in bounded chunks: it must parse cleanly and hash to what
    was written; ``n_bytes`` and ``sha256`` come from that re-read.  On
    failure the partly written file is removed.
    """
    p = Path(path)
    if isinstance(payloads, (bytes, bytearray, memoryview, str)):
        raise ContainerError(str(p), "payloads must be a sequence of bytes objects, not a single bytes/str")
    if not isinstance(payloads, Sequence):
        payloads = list(payloads)
    count = len(payloads)
    if count > _MAX_U32:
        raise ContainerError(str(p), f"{count} payloads, above the 2**32-1 limit")
    try:
        f = open(p, "xb")
    except FileExistsError as exc:
        raise ContainerError(str(p), "refusing to overwrite an existing bitstream file") from exc
    except OSError as exc:
        raise ContainerError(str(p), f"cannot create bitstream file: {exc.strerror or exc}") from exc
    try:
        digest = hashlib.sha256()
        crc = 0
        written = 0

        def put(data) -> None:
            nonlocal crc, written
            f.write(data)
            digest.update(data)
            crc = zlib.crc32(data, crc)
            written += len(data)

        with f:
            put(_HEADER.pack(MAGIC, VERSION, count))
            for i in range(count):
                payload = payloads[i]
                if not isinstance(payload, (bytes, bytearray, memoryview)):
                    raise ContainerError(str(p), f"payload {i} is {type(payload).__name__}, expected bytes")
                data = memoryview(payload).cast("B")
                if len(data) > _MAX_U32:
                    raise ContainerError(str(p), f"payload {i} is {len(data)} bytes, above the 2**32-1 limit")
                put(_U32.pack(len(data)))
                put(data)
                del payload, data  # hold one payload at a time
            trailer = _U32.pack(crc)
            f.write(trailer)
            digest.update(trailer)
            written += len(trailer)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(p.parent)
        with open_bitstream(p) as check:
            if check.n_bytes != written or check.sha256 != digest.hexdigest():
                raise ContainerError(
                    str(p), f"bytes read back ({check.n_bytes}) differ from bytes written ({written})"
                )
            info = BitstreamInfo(path=p, n_bytes=check.n_bytes, sha256=check.sha256)
    except BaseException:
        p.unlink(missing_ok=True)
        raise
    return info


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
    """Read and validate a container file; returns the per-frame payloads (all in memory).

    For a bitstream of any size prefer :func:`open_bitstream`, which holds one payload at a time.
    """
    with open_bitstream(path) as payloads:
        return list(payloads)


class BitstreamPayloads(Sequence):
    """A checked container file whose payloads are read one at a time, on demand.

    Opening reads the whole file once in bounded chunks: layout, every length,
    the CRC-32 and the SHA-256 (:attr:`sha256`, :attr:`n_bytes`); only the
    offsets and lengths are kept (:attr:`lengths`). Indexing then reads one
    payload from the same open descriptor. Compares equal to a list of the same
    payloads. Close it (or use it as a context manager) when done.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        source = str(self.path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ContainerError(source, "bitstream file not found") from exc
        except OSError as exc:
            raise ContainerError(source, f"cannot read bitstream file: {exc.strerror or exc}") from exc
        try:
            self._scan(source)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    def _scan(self, source: str) -> None:
        fd = self._fd
        n = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_SIZE, 0)
        if n == 0:
            raise ContainerError(source, "empty (0 bytes): not a codecfleet bitstream")
        if n < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
            raise ContainerError(source, f"bad magic {head[:4]!r} (expected {MAGIC!r}): not a codecfleet bitstream")
        if n < HEADER_SIZE:
            raise ContainerError(source, f"truncated header: {n} bytes, the header alone is {HEADER_SIZE}")
        _, version, count = _HEADER.unpack_from(head, 0)
        if version != VERSION:
            raise ContainerError(source, f"unsupported version {version} (this reader handles {VERSION})")
        if n < HEADER_SIZE + TRAILER_SIZE:
            raise ContainerError(
                source, f"truncated: {n} bytes, header and CRC trailer need {HEADER_SIZE + TRAILER_SIZE}"
            )
        end = n - TRAILER_SIZE
        digest = hashlib.sha256()
        crc = 0
        # One pass over the file in 1 MiB reads: CRC-32 of everything before the
        # trailer and SHA-256 of everything. The structure is walked afterwards from
        # the length prefixes alone (4-byte reads), so no payload is ever held.
        pos = 0
        while pos < n:
            chunk = os.pread(fd, min(1 << 20, n - pos), pos)
            if not chunk:
                raise ContainerError(source, "the file shrank while it was read")
            digest.update(chunk)
            crc_part = chunk[: max(0, end - pos)]
            crc = zlib.crc32(crc_part, crc)
            pos += len(chunk)
        stored_crc = _U32.unpack(os.pread(fd, TRAILER_SIZE, end))[0]
        crc_note = "" if stored_crc == crc else "; the CRC-32 does not match either"
        offsets: list[int] = []
        lengths: list[int] = []
        pos = HEADER_SIZE
        for i in range(count):
            if pos + _U32.size > end:
                raise ContainerError(
                    source,
                    f"truncated at record {i} of {count}: its length prefix is missing "
                    f"({end - pos} bytes left before the trailer){crc_note}",
                )
            length = _U32.unpack(os.pread(fd, _U32.size, pos))[0]
            pos += _U32.size
            if pos + length > end:
                raise ContainerError(
                    source,
                    f"truncated at record {i} of {count}: length {length} overflows the file "
                    f"({end - pos} bytes left before the trailer){crc_note}",
                )
            offsets.append(pos)
            lengths.append(length)
            pos += length
        if pos != end:
            raise ContainerError(source, f"{end - pos} trailing bytes after the last of {count} records{crc_note}")
        if stored_crc != crc:
            raise ContainerError(
                source, f"CRC-32 mismatch: stored {stored_crc:08x}, computed {crc:08x} (corrupt bytes)"
            )
        self._offsets = offsets
        self.lengths = lengths
        self.n_bytes = n
        self.sha256 = digest.hexdigest()

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._fd < 0:
            raise ContainerError(str(self.path), "read from a closed bitstream")
        offset, length = self._offsets[index], self.lengths[index]
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise ContainerError(str(self.path), f"record {index} changed size after the file was checked")
        return data

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (bytes, str)):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BitstreamPayloads({str(self.path)!r}, {len(self)} payloads, {self.n_bytes} bytes)"

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "BitstreamPayloads":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def open_bitstream(path: str | os.PathLike) -> BitstreamPayloads:
    """Check a container file in one bounded pass; its payloads are then read one at a time."""
    return BitstreamPayloads(path)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
