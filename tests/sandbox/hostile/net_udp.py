"""Attack: send a UDP datagram to a listener on the worker's loopback."""
import socket


def compress_video_frame(frame, frame_index, config):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"exfiltrated", ("127.0.0.1", int("{{UDP_PORT}}")))
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
