"""Attack: fill the writable work dir (and so the worker's memory or disk)."""


def compress_video_frame(frame, frame_index, config):
    block = b"\0" * (1 << 20)
    with open("/tmp/fill", "wb") as fh:
        while True:
            fh.write(block)
            fh.flush()


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
