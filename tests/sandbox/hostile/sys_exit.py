"""Attack: sys.exit from the encoder (SystemExit is not an Exception)."""
import sys


def compress_video_frame(frame, frame_index, config):
    sys.exit(0)


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
