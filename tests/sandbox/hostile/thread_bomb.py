"""Attack: start threads until something gives."""
import threading
import time


def compress_video_frame(frame, frame_index, config):
    while True:
        threading.Thread(target=time.sleep, args=(3600,)).start()


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
