"""Attack (issue 12, finding 5): every frame under the per-payload cap, the whole far over any sane size."""


def compress_video_frame(frame, frame_index, config):
    return b"\x5a" * (100 << 10)


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
