"""Attack: write 100 MB to stdout (a log flood, and a try at corrupting the protocol)."""
import sys


def compress_video_frame(frame, frame_index, config):
    chunk = "y" * (1 << 20)
    for _ in range(100):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
