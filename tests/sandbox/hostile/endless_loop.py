"""Attack: never return from the encoder."""


def compress_video_frame(frame, frame_index, config):
    n = 0
    while True:
        n += 1


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
