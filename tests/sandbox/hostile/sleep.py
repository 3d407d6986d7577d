"""Attack: sleep in the decoder (no CPU used, so only a wall clock catches it)."""
import time
import zlib

import numpy as np


def compress_video_frame(frame, frame_index, config):
    return zlib.compress(frame.tobytes())


def decompress_video_frame(compressed_data, frame_index, config):
    time.sleep(3600)
    return np.frombuffer(zlib.decompress(compressed_data), np.uint8).reshape(config["height"], config["width"], 3)
