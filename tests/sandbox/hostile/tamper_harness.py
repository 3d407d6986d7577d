"""Attack: forge a protocol message on the harness's response pipe, claiming a 1 TiB payload."""
import os
import struct

for fd in range(3, 1100):
    try:
        os.write(fd, struct.pack("<cQ", b"B", 1 << 40))
    except OSError:
        pass


def compress_video_frame(frame, frame_index, config):
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
