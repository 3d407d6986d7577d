"""Attack: resolve a name (DNS leaks data and proves network access)."""
import socket


def compress_video_frame(frame, frame_index, config):
    info = socket.getaddrinfo("example.com", 80)
    raise RuntimeError(f"resolved: {info!r}")


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
