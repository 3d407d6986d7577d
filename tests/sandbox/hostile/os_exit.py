"""Attack: os._exit from the encoder, skipping every handler."""
import os


def compress_video_frame(frame, frame_index, config):
    os._exit(0)


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
