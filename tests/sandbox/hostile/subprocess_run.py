"""Attack: run a program with subprocess."""
import subprocess


def compress_video_frame(frame, frame_index, config):
    subprocess.run(["/bin/sh", "-c", "touch {{HOST_MARKER}}"], check=True)
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
