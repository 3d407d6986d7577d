"""Attack: call libc's system() through ctypes, around Python's own checks."""
import ctypes


def compress_video_frame(frame, frame_index, config):
    libc = ctypes.CDLL(None)
    rc = libc.system(b"touch {{HOST_MARKER}}")
    raise RuntimeError(f"libc.system returned {rc}")


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
