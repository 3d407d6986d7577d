"""Attack (issue 12, finding 2): carry bits from encoder to decoder outside the bitstream,
in the page cache of a large read-only library both sandboxes see.

The encoder sends the low bit of the first BITS bytes of frame 0: it evicts the
pages of a region of the library (posix_fadvise DONTNEED; MADV_PAGEOUT as a
second try) and reads back exactly the pages whose bit is 1. The decoder asks
which pages are resident (mincore, else cachestat-like probes, else the time a
one-byte read takes: METHOD "timing") and paints the bits into frame 0: byte i
is 255 for a 1. Byte BITS says whether mincore worked, byte BITS+1 whether
eviction worked. The payload is empty.
"""
import ctypes
import mmap
import os
import time

import numpy as np

BITS = 2048
PAGE = 4096
METHOD = "{{METHOD}}"


def _library():
    import numpy

    best = (0, "")
    for top in (os.path.dirname(numpy.__file__), os.path.dirname(numpy.__file__) + ".libs"):
        for root, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                size = os.path.getsize(path)
                if size > best[0]:
                    best = (size, path)
    return best[1]


def _region(fd):
    size = os.fstat(fd).st_size
    start = max(0, (size // PAGE - BITS - 64)) * PAGE  # the tail: least likely to be in use
    return start, BITS * PAGE


def compress_video_frame(frame, frame_index, config):
    if frame_index != 0:
        return b""
    bits = frame.reshape(-1)[:BITS] & 1
    fd = os.open(_library(), os.O_RDONLY)
    start, length = _region(fd)
    evicted = 1
    try:
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        evicted = 0
        try:
            m = mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=start)
            m.madvise(21)  # MADV_PAGEOUT
            m.close()
            evicted = 1
        except (OSError, ValueError):
            pass
    for i in np.flatnonzero(bits):
        os.pread(fd, 1, start + int(i) * PAGE)
    os.close(fd)
    return bytes([evicted])


def _mincore(fd, start, length):
    libc = ctypes.CDLL(None, use_errno=True)
    # private and writable only so that ctypes can take its address; nothing is written
    m = mmap.mmap(fd, length, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    # the mapping's address, through a ctypes view of the mmap object
    view = (ctypes.c_char * 1).from_buffer(m)
    addr = ctypes.addressof(view)
    vec = (ctypes.c_ubyte * (length // PAGE))()
    rc = libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(length), vec)
    err = ctypes.get_errno()
    del view
    m.close()
    if rc != 0:
        raise OSError(err, "mincore")
    return np.frombuffer(bytes(vec), np.uint8) & 1


def _timing(fd, start):
    times = np.empty(BITS)
    for i in range(BITS):
        t0 = time.perf_counter_ns()
        os.pread(fd, 1, start + i * PAGE)
        times[i] = time.perf_counter_ns() - t0
    # resident pages answer in about a microsecond; a miss goes to the disk
    return (times < max(4 * np.median(times[times > 0]) if (times > 0).any() else 1, 8000)).astype(np.uint8)


def decompress_video_frame(compressed_data, frame_index, config):
    out = np.zeros((config["height"], config["width"], 3), np.uint8)
    if frame_index != 0:
        return out
    fd = os.open(_library(), os.O_RDONLY)
    start, length = _region(fd)
    flat = out.reshape(-1)
    bits = None
    if METHOD != "timing":
        try:
            bits = _mincore(fd, start, length)
            flat[BITS] = 1
        except OSError:
            bits = None
    if bits is None and METHOD == "timing":
        bits = _timing(fd, start)
    os.close(fd)
    if bits is not None:
        flat[:BITS] = bits * 255
    flat[BITS + 1] = compressed_data[:1] == b"\x01"
    return out
