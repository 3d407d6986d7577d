"""Attack: replace the process with a shell."""
import os


def compress_video_frame(frame, frame_index, config):
    os.execv("/bin/sh", ["sh", "-c", "touch {{HOST_MARKER}}"])


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
