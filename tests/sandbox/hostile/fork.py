"""Attack: fork a child that would outlive the sandbox."""
import os
import time


def compress_video_frame(frame, frame_index, config):
    pid = os.fork()
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
