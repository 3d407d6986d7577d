"""Attack: hang while being imported (an assignment survives the sanitizer)."""
import time


def _forever():
    while True:
        time.sleep(1)


_STATE = _forever()


def compress_video_frame(frame, frame_index, config):
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
