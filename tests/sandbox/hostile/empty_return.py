"""Attack: empty payloads, then an empty array for a frame."""
import numpy as np


def compress_video_frame(frame, frame_index, config):
    return b""


def decompress_video_frame(compressed_data, frame_index, config):
    return np.zeros((0,), dtype=np.uint8)
