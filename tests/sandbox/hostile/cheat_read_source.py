"""Cheat: a decoder that ignores the bitstream and reads the source clip from the worker's disk."""
import numpy as np


def compress_video_frame(frame, frame_index, config):
    return b"\0"


def decompress_video_frame(compressed_data, frame_index, config):
    try:
        import av

        with av.open("{{SOURCE_CLIP}}") as container:
            for i, f in enumerate(container.decode(video=0)):
                if i == frame_index:
                    return f.to_ndarray(format="rgb24")
    except Exception:
        pass
    return np.zeros((config["height"], config["width"], 3), dtype=np.uint8)
