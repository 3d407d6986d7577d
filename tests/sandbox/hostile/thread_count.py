"""Attack (issue 12, finding 4): small-stack threads until something gives; says how many started."""
import threading
import time

threading.stack_size(64 << 10)


def compress_video_frame(frame, frame_index, config):
    started = 0
    try:
        while started < 100000:
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
            started += 1
    except BaseException as exc:
        raise RuntimeError("started %d threads, then %s" % (started, type(exc).__name__))
    raise RuntimeError("started %d threads, then nothing stopped it" % started)


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
