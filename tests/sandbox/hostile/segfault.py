"""Attack: crash the interpreter with a segmentation fault."""
import ctypes


def compress_video_frame(frame, frame_index, config):
    ctypes.c_char.from_address(8).value  # reads address 8: SIGSEGV
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
