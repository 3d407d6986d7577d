"""The code that runs inside the sandbox, next to the candidate.

Started by :mod:`sandbox.runner` as ``python -I -S -B harness.py REQ_FD RESP_FD`` inside
bubblewrap, as the sandbox's pid 1 and only process (``--as-pid-1``), already
under the outer seccomp filter that bubblewrap loaded before executing Python,
as an unprivileged host uid, inside the session's cgroup. It is trusted only until the candidate is imported: after that the
candidate shares this interpreter and may rewrite anything here, so the trusted
side believes nothing from this process except bytes it then checks itself
(lengths, shapes, dtypes); it times every call with its own clock.

Order of work, and why:

1. read the init message (role, code, limits, seccomp policy, frame slot) over
   the request pipe;
2. move the protocol pipes to high fd numbers and leave fd 1/2 as the capped
   capture pipes the trusted side drains, so a candidate's ``print`` cannot
   corrupt the protocol; map the shared frame slot (read-only for the encoder);
3. set rlimits (the candidate cannot raise hard limits: no CAP_SYS_RESOURCE);
4. make the process non-dumpable (no ``/proc/1/mem`` writes, no core) and stack
   the inner seccomp program (no ``execve``) on bubblewrap's outer one;
5. report ``A`` (armed) or ``S`` (set-up failed): the last word this process
   has on its isolation, sent before any candidate code runs;
6. import the candidate as a real module named ``candidate`` from a file;
7. serve encode/decode requests until told to stop.

Started as ``harness.py --template CTL_FD PLACEHOLDER`` it is instead a
*template* (issue 16, see ``_template_main``): it imports numpy (and torch),
then forks sessions on the trusted side's word; each fork runs the same steps
above, in its own namespaces, after the trusted side moved it into its session
cgroup (``_session_child``, ``_seal_forked``).

Stdlib only (plus numpy from the bound site-packages; the seccomp filter arrives
compiled as BPF bytes, so libseccomp is not needed in here): this file
must not import anything from the project, which is not mounted here.

Wire format, both directions: 1 byte kind, 8 bytes little-endian length, body.

* ``I``: 8-byte length of a JSON header, the header (``role``, ``config``,
  ``sys_path``, ``seccomp``, ``seccomp_bpf``, ``limits``, ``slot``: ``{"fd",
  "bytes"}``), then the candidate's source. Answer ``A`` (sandbox set up) or
  ``S`` (set-up failed, and stop); after ``A``, ``R`` (ready) or ``X`` (the
  candidate failed to import).
* ``E``: ``<qqq`` index, height, width; the frame is in the slot (H*W*3 bytes
  from offset 0). Answer ``B`` with the payload, or ``X``.
* ``D``: ``<q`` index, then the payload. Answer ``F`` whose body is JSON
  ``{"shape", "dtype"}``, the array itself written C-ordered into the slot from
  offset 0; or ``X``.
* ``Q``: answer ``q`` and exit.

The frame slot is a memfd the trusted side created, sized and sealed
(no shrinking or growing); this side maps it once.
"""

import json
import mmap
import os
import struct
import sys
import traceback

HEADER = struct.Struct("<cQ")
SECCOMP_MODES = ("on", "off")


def _read_exact(fd, n):
    # One buffer filled in place: a 720p frame is 2.7 MB, and every extra copy shows per call.
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if not k:
            raise EOFError("request pipe closed")
        got += k
    return buf


def _recv(fd):
    kind, length = HEADER.unpack(_read_exact(fd, HEADER.size))
    return kind, _read_exact(fd, length)


def _send(fd, kind, *parts):
    length = sum(memoryview(p).nbytes for p in parts)
    data = [HEADER.pack(kind, length), *parts]
    for part in data:
        view = memoryview(part).cast("B")
        while len(view):
            written = os.write(fd, view)
            view = view[written:]


def _error(fd, message):
    # The trusted side takes at most 4096 bytes and calls anything longer a forgery.
    _send(fd, b"X", message.encode("utf-8", "replace")[:4000])


def _short_exception(exc):
    """The last frame in candidate code plus the exception, fit to show an LLM."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for frame in reversed(frames):
        if frame.filename.endswith("candidate.py"):
            where = " (line %d in %s)" % (frame.lineno, frame.name)
            break
    text = str(exc)
    if len(text) > 300:
        text = text[:300] + "..."
    return "%s: %s%s" % (type(exc).__name__, text, where)


def _set_rlimits(limits):
    import resource

    def cap(name, value):
        if value is None:
            return
        which = getattr(resource, name)
        soft, hard = resource.getrlimit(which)
        value = int(value)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    cap("RLIMIT_CPU", limits.get("cpu_seconds"))
    cap("RLIMIT_FSIZE", limits.get("max_file_bytes"))
    cap("RLIMIT_NOFILE", limits.get("max_open_files"))
    cap("RLIMIT_CORE", 0)
    cap("RLIMIT_AS", limits.get("address_space_bytes"))
    cap("RLIMIT_NPROC", limits.get("max_processes"))


def _close_other_fds(keep):
    """Close every inherited descriptor but ``keep`` and the frame slot's (bwrap's
    seccomp descriptor, anything a launcher leaked): none may reach the candidate."""
    slot = None
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep:
            continue
        try:
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            continue  # the listing's own descriptor, already closed
        if slot is None and target.startswith("/memfd:cf-frame-slot"):
            slot = fd
            continue
        try:
            os.close(fd)
        except OSError:
            pass


def _set_not_dumpable():
    """PR_SET_DUMPABLE 0: nothing of the same uid may ptrace or write /proc/<pid>/mem."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _load_seccomp(bpf):
    """Install the trusted side's compiled BPF denylist on every thread of this process.

    seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, prog): TSYNC so
    that threads numpy's BLAS already started are filtered too.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    # PR_SET_NO_NEW_PRIVS (bwrap sets it too; this covers the weaker modes).
    if libc.prctl(38, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = ctypes.create_string_buffer(bytes(bpf), len(bpf))
    fprog = SockFprog(len(bpf) // 8, ctypes.cast(program, ctypes.c_void_p))
    sys_seccomp = {"x86_64": 317, "aarch64": 277}.get(os.uname().machine)
    if sys_seccomp is None:
        raise OSError("seccomp: unknown machine %s" % os.uname().machine)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(sys_seccomp), ctypes.c_long(1), ctypes.c_long(1), ctypes.byref(fprog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) failed")


def _import_candidate(code):
    import importlib.util

    path = os.path.join(os.getcwd(), "candidate.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(code)
    spec = importlib.util.spec_from_file_location("candidate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = module
    spec.loader.exec_module(module)
    return module


def _merged_config(module, system_config):
    defaults = getattr(module, "DEFAULT_CONFIG", None)
    merged = dict(defaults) if isinstance(defaults, dict) else {}
    merged.update(system_config)
    return merged


def main(argv):
    if argv[1] == "--template":
        return _template_main(int(argv[2]))
    req_fd, resp_fd = int(argv[1]), int(argv[2])
    # Private numbers, far from 0/1/2, so that the candidate's stdout is not the protocol.
    req = os.dup2(req_fd, 1000, inheritable=False)
    resp = os.dup2(resp_fd, 1001, inheritable=False)
    os.close(req_fd)
    os.close(resp_fd)

    _close_other_fds({0, 1, 2, req, resp})
    return _serve(req, resp)


def _serve(req, resp, after_gate=None):
    """Steps 1 and 3-7 above; ``after_gate`` runs once the init message (the gate) came."""
    kind, body = _recv(req)
    if kind != b"I":
        _error(resp, "harness: expected init message")
        return 2
    if after_gate is not None:
        try:
            after_gate()
        except Exception as exc:
            _send(resp, b"S", ("%s: %s" % (type(exc).__name__, exc)).encode("utf-8", "replace"))
            return 4
    header_len = struct.unpack("<Q", body[:8])[0]
    init = json.loads(body[8 : 8 + header_len].decode("utf-8"))
    code = body[8 + header_len :].decode("utf-8")
    for path in init.get("sys_path", ()):
        sys.path.append(path)

    import numpy as np

    # The frame slot: read-only for the encoder (its input), writable for the
    # decoder (its output). mmap keeps its own descriptor; ours is closed.
    slot_bytes = int(init["slot"]["bytes"])
    slot_fd = int(init["slot"]["fd"])
    access = mmap.ACCESS_WRITE if init["role"] == "decoder" else mmap.ACCESS_READ
    slot_map = mmap.mmap(slot_fd, slot_bytes, access=access)
    os.close(slot_fd)
    slot = np.frombuffer(slot_map, dtype=np.uint8)

    try:
        _set_rlimits(init["limits"])
        _set_not_dumpable()
        if init["seccomp"] == "on":
            import base64

            programs = init["seccomp_bpf"]
            # A forked session stacks the whole session filter (outer, then inner) on
            # the template's; a cold one only the inner on bwrap's outer.
            for program in programs if isinstance(programs, list) else [programs]:
                _load_seccomp(base64.b64decode(program))
    except Exception as exc:  # the sandbox is not what was asked for: never run the candidate
        _send(resp, b"S", ("%s: %s" % (type(exc).__name__, exc)).encode("utf-8", "replace"))
        return 4
    _send(resp, b"A", b"")

    try:
        module = _import_candidate(code)
        compress = getattr(module, "compress_video_frame", None)
        decompress = getattr(module, "decompress_video_frame", None)
        if not callable(compress) or not callable(decompress):
            raise AttributeError("module must define compress_video_frame and decompress_video_frame")
        config = _merged_config(module, init["config"])
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: report, do not die
        _error(resp, _short_exception(exc))
        return 0
    _send(resp, b"R", b"")

    max_payload = int(init["limits"]["max_payload_bytes"])
    while True:
        kind, body = _recv(req)
        if kind == b"Q":
            _send(resp, b"q", b"")
            return 0
        if kind == b"E":
            index, height, width = struct.unpack("<qqq", body[:24])
            if height <= 0 or width <= 0 or height * width * 3 > slot_bytes:
                _error(resp, "harness: frame %dx%d does not fit the slot" % (width, height))
                return 2
            # A private copy: the slot is refilled for the next call, and a candidate
            # may keep this frame (inter coding). Read-only, as in-process.
            frame = slot[: height * width * 3].reshape(height, width, 3).copy()
            frame.flags.writeable = False
            try:
                out = compress(frame, index, config)
            except BaseException as exc:
                _error(resp, "compress_video_frame(frame %d): %s" % (index, _short_exception(exc)))
                continue
            if not isinstance(out, (bytes, bytearray)):
                _error(
                    resp,
                    "compress_video_frame(frame %d) returned %s, expected bytes"
                    % (index, type(out).__name__),
                )
                continue
            if len(out) > max_payload:
                _error(
                    resp,
                    "compress_video_frame(frame %d) returned %d bytes; the cap is %d"
                    % (index, len(out), max_payload),
                )
                continue
            _send(resp, b"B", bytes(out))
        elif kind == b"D":
            index = struct.unpack("<q", body[:8])[0]
            data = bytes(memoryview(body)[8:])
            try:
                out = decompress(data, index, config)
            except BaseException as exc:
                _error(resp, "decompress_video_frame(frame %d): %s" % (index, _short_exception(exc)))
                continue
            if not isinstance(out, np.ndarray):
                _error(
                    resp,
                    "decompress_video_frame(frame %d) returned %s, expected numpy.ndarray"
                    % (index, type(out).__name__),
                )
                continue
            if out.dtype.kind not in "biuf" or out.ndim > 8:
                _error(
                    resp,
                    "decompress_video_frame(frame %d) returned dtype %s with %d dims, expected uint8 (H, W, 3)"
                    % (index, out.dtype, out.ndim),
                )
                continue
            if out.nbytes > slot_bytes:
                _error(
                    resp,
                    "decompress_video_frame(frame %d) returned %d bytes (shape %s, dtype %s); the cap is %d"
                    % (index, out.nbytes, out.shape, out.dtype, slot_bytes),
                )
                continue
            np.copyto(slot[: out.nbytes].view(out.dtype).reshape(out.shape), out, casting="no")
            meta = json.dumps({"shape": list(out.shape), "dtype": out.dtype.str}).encode()
            _send(resp, b"F", meta)
        else:
            _error(resp, "harness: unknown request")
            return 2


# --------------------------------------------------------------------------- the template

# Namespace flags (linux/sched.h).
_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
_CLONE_NEWIPC, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x2, 0x4, 0x8
#: where a forked session keeps the frame slot's descriptor
_SLOT_FD = 1003


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _check(ok, what):
    if not ok:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, "%s failed: %s" % (what, os.strerror(err)))


def _rss_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def _thread_count():
    return len(os.listdir("/proc/self/task"))


def _stop_blas_threads():
    """OpenBLAS starts its pool when numpy loads; stop it (it restarts on first use, in
    the session) so that the template holds one thread when it forks."""
    ctypes, _ = _libc()
    seen = set()
    with open("/proc/self/maps") as fh:
        for line in fh:
            path = line.split()[-1]
            if "openblas" in path and path not in seen:
                seen.add(path)
                try:
                    fn = getattr(ctypes.CDLL(path), "blas_thread_shutdown_", None)
                except OSError:
                    continue
                if fn is not None:
                    fn()


def _template_main(ctl_fd):
    """A template (zygote): imports the runtime, then forks sessions on the trusted side's word.

    It never sees frames, bitstreams or candidate code (those travel on each
    session's own pipes, which it only passes on), never initialises CUDA, and
    answers on its control socket: ``R`` ready, ``P`` forked (the child's pid
    here), ``T`` refused (not single-threaded: it exits), ``W`` a child ended
    (pid and wait status).
    """
    import socket

    ctl = os.dup2(ctl_fd, 1002, inheritable=False)
    os.close(ctl_fd)
    _close_other_fds({0, 1, 2, ctl})
    sock = socket.socket(fileno=ctl)
    init = json.loads(os.read(ctl, 1 << 20).decode("utf-8"))  # read(): recvfrom is denied here
    try:
        for path in init.get("sys_path", ()):
            sys.path.append(path)
        # What a session needs before its candidate loads, imported once here.
        import base64, ctypes, importlib.util, resource, select  # noqa: F401

        base_rss = None
        for name in init.get("modules", ()):
            __import__(name)
            if name == "numpy":  # what every session has: the interpreter, the harness, numpy
                base_rss = _rss_bytes()
        _stop_blas_threads()
        _load_seccomp(base64.b64decode(init["exec_bpf"]))  # nothing here executes a program again
        for _ in range(200):
            if _thread_count() == 1:
                break
            import time

            time.sleep(0.005)
    except Exception as exc:
        os.write(ctl, b"S" + ("%s: %s" % (type(exc).__name__, exc)).encode("utf-8", "replace")[:4000])
        return 4
    os.write(ctl, b"R" + json.dumps({"threads": _thread_count(), "base_rss": base_rss}).encode())
    import select
    import signal

    # SIGCHLD wakes the loop at once (a session's end is reported without delay).
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        events = [fd for fd, _ in poller.poll(1000)]
        if wake_r in events:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
        while True:  # reap every child that ended: the sessions are re-parented here
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            os.write(ctl, b"W%d %d" % (pid, status))
        if ctl not in events:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 8)
        except OSError:
            return 3
        if not msg:
            return 0  # the trusted side went away
        if msg[:1] != b"F" or len(fds) != 5:
            for fd in fds:
                os.close(fd)
            os.write(ctl, b"Tbad request")
            return 2
        threads = _thread_count()
        if threads != 1:
            os.write(ctl, b"T%d threads: forking is unsafe" % threads)
            return 5
        spec = json.loads(msg[1:].decode("utf-8"))
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)
            os._exit(_session_child(ctl, fds, spec))
        for fd in fds:
            os.close(fd)
        os.write(ctl, b"P%d" % pid)


def _write_file(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _session_child(ctl, fds, spec):
    """In the template's child: new namespaces, then fork the session as their pid 1."""
    resp = -1
    try:
        os.close(ctl)
        req = os.dup2(fds[0], 1000, inheritable=False)
        resp = os.dup2(fds[1], 1001, inheritable=False)
        os.dup2(fds[2], 1)
        os.dup2(fds[3], 2)
        os.dup2(fds[4], _SLOT_FD)
        for fd in fds:
            os.close(fd)
        _close_other_fds({0, 1, 2, req, resp, _SLOT_FD})
        ctypes, libc = _libc()
        uid, gid = os.getuid(), os.getgid()
        flags = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWNET | _CLONE_NEWUTS
        _check(libc.unshare(flags) == 0, "unshare(user, mount, pid, ipc, net, uts)")
        _write_file("/proc/self/setgroups", "deny")
        _write_file("/proc/self/uid_map", "%d %d 1" % (uid, uid))
        _write_file("/proc/self/gid_map", "%d %d 1" % (gid, gid))
        pid = os.fork()
    except BaseException as exc:
        if resp >= 0:
            _send(resp, b"S", ("forking a session: %s: %s" % (type(exc).__name__, exc)).encode("utf-8", "replace"))
        return 4
    if pid:
        # Where the session is in the template's pid namespace: the trusted side
        # finds its host pid from that, moves it into its cgroup, then sends "I".
        _send(resp, b"G", struct.pack("<q", pid))
        return 0
    try:
        os.setsid()
        for src, dst, fstype, data in (
            ("proc", "/proc", "proc", None),
            ("tmpfs", "/tmp", "tmpfs", "size=%d,mode=0755" % int(spec["tmp"])),
            ("tmpfs", "/dev/shm", "tmpfs", "size=%d,mode=0755" % int(spec["shm"])),
        ):
            _check(
                libc.mount(src.encode(), dst.encode(), fstype.encode(), ctypes.c_ulong(_MS_NOSUID | _MS_NODEV | _MS_NOEXEC),
                           data.encode() if data else None) == 0,
                "mounting a fresh %s on %s" % (fstype, dst),
            )
        os.chdir("/tmp")
        _set_cmdline_token(spec["token"], spec["placeholder"])
        sys.argv = [sys.argv[0], "1000", "1001", spec["token"]]
    except BaseException as exc:
        _send(resp, b"S", ("setting up a forked session: %s: %s" % (type(exc).__name__, exc)).encode("utf-8", "replace"))
        return 4
    status = _serve(req, resp, after_gate=_seal_forked)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return status


def _set_cmdline_token(token, placeholder):
    """Write the session's token over the template's placeholder in the argv area
    (what /proc/<pid>/cmdline shows), so that the session can be found by it."""
    ctypes, _ = _libc()
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    area = ctypes.string_at(start, end - start)
    at = area.find(placeholder.encode())
    if at < 0 or len(token) != len(placeholder):
        raise OSError("the template's command line holds no placeholder for the token")
    ctypes.memmove(start + at, token.encode(), len(token))


def _seal_forked():
    """After the gate (the session is in its cgroup): a cgroup namespace rooted
    there, then no capabilities at all, in any set, for good."""
    ctypes, libc = _libc()
    _check(libc.unshare(_CLONE_NEWCGROUP) == 0, "unshare(cgroup)")
    _check(libc.prctl(47, 4, 0, 0, 0) == 0, "clearing the ambient capabilities")  # PR_CAP_AMBIENT_CLEAR_ALL
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # PR_CAPBSET_DROP; EINVAL: no such cap
            _check(False, "dropping capability %d from the bounding set" % cap)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    _check(libc.capset(ctypes.byref(Header(0x20080522, 0)), data) == 0, "capset(0)")
    with open("/proc/self/status") as fh:
        status = dict(line.split(":", 1) for line in fh if ":" in line)
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        if int(status[key].strip(), 16) != 0:
            raise OSError("%s is %s after dropping every capability" % (key, status[key].strip()))


if __name__ == "__main__":
    try:
        status = main(sys.argv)
    except EOFError:  # the trusted side went away: nothing left to do
        status = 3
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # os._exit: do not wait for threads a candidate left running.
    os._exit(status)
