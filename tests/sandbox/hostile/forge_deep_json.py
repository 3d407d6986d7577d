"""Attack (issue 12, finding 6): answer the trusted side directly on the protocol pipe
with a frame description nested {{DEPTH}} deep, then hang."""
import os
import struct
import time


def compress_video_frame(frame, frame_index, config):
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    depth = int("{{DEPTH}}")
    body = b"[" * depth + b"]" * depth
    for fd in range(3, 1100):
        try:
            os.write(fd, struct.pack("<cQ", b"F", len(body)) + body)
        except OSError:
            pass
    time.sleep(3600)
