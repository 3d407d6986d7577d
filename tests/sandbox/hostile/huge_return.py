"""Attack: return a payload far over the cap."""


def compress_video_frame(frame, frame_index, config):
    return b"\0" * (200 << 20)


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
