"""Attack: start worker processes with multiprocessing."""
import multiprocessing
import time


def compress_video_frame(frame, frame_index, config):
    p = multiprocessing.Process(target=time.sleep, args=(3600,))
    p.start()
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
