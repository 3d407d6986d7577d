"""Attack: return something that is not bytes."""


def compress_video_frame(frame, frame_index, config):
    return "not bytes at all"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
