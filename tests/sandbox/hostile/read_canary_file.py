"""Attack: read a secret file that sits beside the source clip, and leak it every way it can."""
import sys


def compress_video_frame(frame, frame_index, config):
    with open("{{CANARY_PATH}}") as fh:
        secret = fh.read()
    print(secret)
    print(secret, file=sys.stderr)
    raise RuntimeError(f"leaked: {secret}")


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
