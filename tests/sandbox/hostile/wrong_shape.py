"""Attack: decode to frames of the wrong shape and dtype."""
import numpy as np


def compress_video_frame(frame, frame_index, config):
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((config["width"], config["height"], 3), dtype=np.float32)
