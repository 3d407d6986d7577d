"""Sandboxed execution of untrusted candidate codecs.

Each :meth:`SandboxRunner.encode` and :meth:`SandboxRunner.decode` starts one
fresh sandboxed Python process, imports the candidate there as a real module,
and drives it with small messages over a pipe; the decoder's sandbox is a
different process that never saw the frames.

Frames travel through one shared-memory *slot* per session: a sealed memfd
(``F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL``, so the sandbox can neither
truncate it under the trusted side's mapping, which would be a SIGBUS here, nor
change its seals) created and mapped by the trusted side, inherited by the
sandboxed process and mapped there once. Reused pages matter: on these VMs a
2.7 MB frame in fresh pages costs milliseconds of page faults.

* encode: the trusted side copies frame *i* into the slot and sends ``E``
  (index, height, width); the harness maps the slot read-only and hands the
  candidate a private, read-only copy (a kept reference to an earlier frame
  never changes, and frames still arrive one at a time: the slot never holds a
  frame before its call). The reference frames are the trusted side's own
  array, which nothing in the sandbox can reach.
* decode: the harness writes the returned array into the slot and sends ``F``
  with its shape and dtype; the trusted side checks those against the slot's
  size before reading, then copies the frame out (straight into the result
  array when it is ``(H, W, 3)`` uint8). The sandbox may scribble on the slot
  at any time; only the copy taken after the reply is used.

Compressed payloads, both ways, still go through the pipe.

Layers, outermost first (``strict`` mode):

* **session cgroup** (:mod:`sandbox.cgroup`, v2 or v1): memory including
  shmem/memfd and tmpfs, ``pids.max`` (threads count), a CPU quota. The
  sandbox's first process starts held at a gate (``/bin/sh`` waiting for one
  line on its stdin, running nothing else); the worker resets a real-time
  scheduling policy it may have inherited, moves it into the cgroup, checks it
  is there, and only then lets it ``exec`` bubblewrap. A failure is an
  :class:`IsolationError` naming the step and the errno. At the end everything
  in the cgroup is killed, the cgroup is checked empty and removed. Peak memory
  is read from it.
* **unprivileged host uid**: when the worker is root, bwrap and the candidate
  run as the ``codecfleet-sandbox`` system user.
* **bubblewrap**: new user, pid, net, ipc, uts and cgroup namespaces
  (``--unshare-all``, so no network at all), ``--as-pid-1`` (the harness is the
  sandbox's only process: no separate init outside the filter),
  ``--cap-drop ALL``, ``--new-session``, ``--die-with-parent``; a read-only
  root holding only ``/usr``, the interpreter prefix, the Python packages and
  ``/etc/ld.so.cache`` (no ``/home``, ``/root``, project, data or artifact
  dirs); size-capped tmpfs at ``/tmp`` (the work dir) and ``/dev/shm`` as the
  only writable places; a cleared environment, started from an empty one.
* **seccomp** denylist (:mod:`sandbox.seccomp_policy`), loaded by bwrap before
  the interpreter starts, with the exec ban stacked by the harness before the
  candidate loads: no fork, exec, sockets, ptrace, namespaces, io_uring,
  page-cache probes...; threads allowed; foreign-ABI calls kill the process.
* **rlimits**: CPU seconds, file size, open files, no core dumps, address
  space (CPU workers only: CUDA maps huge virtual ranges), process count; the
  harness also makes itself non-dumpable.
* **trusted-side watchdog**: a wall-clock limit per call and per session, after
  which the whole process tree is killed; caps on stdout, stderr, on every
  message's size (checked from its header, before anything is read into
  memory), on failure reports (4 KiB) and on the whole bitstream.

**Templates (issue 16).** Where the probe proved it isolated, a session is not
a fresh interpreter but a fork of this worker's *template*: a sandbox started
exactly as above (gate, its own cgroup, bwrap, the unprivileged uid, no
capabilities) that imports numpy and torch once, never touches CUDA, frames,
bitstreams or candidate code, and only forks on the trusted side's word, under
the ``template`` seccomp program (the session's less fork, unshare, mount and
recvmsg). Encoders fork from a template on the host files, decoders from one on
the decoder view. The fork makes new user, mount, pid, ipc, net and uts
namespaces and forks again, so the session is pid 1 of its own pid namespace
(it can neither see nor signal the template or its siblings) with a fresh
``/proc``, ``/tmp`` and ``/dev/shm``; it reports its pid, the trusted side
finds it on the host (``NSpid``), moves it into its session cgroup and checks
it is there, and only then sends the init message (the gate). The session then
enters a cgroup namespace, drops every capability, sets its rlimits, becomes
non-dumpable and stacks the whole session filter (``outer`` and ``inner``) on
the template's, reports ``A`` and imports the candidate. A template is rebuilt
when it died, when the view key (installed packages) changes, when it is not
single-threaded before a fork (it refuses and exits) and after
:data:`TEMPLATE_MAX_FORKS` sessions; a session whose template fails starts cold
and ``CallLog.started_from`` says why.

The sandbox's isolation is established before candidate code runs: the
harness reports ``A`` (set up) or ``S`` (failed) before importing it, and no
later message can claim anything about the sandbox. The trusted side times
every call itself (request sent to response read) and takes peak memory from
the session cgroup; nothing the candidate reports about itself is used.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import mmap
import os
import select
import signal
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from collections.abc import Sequence

import numpy as np

from evaluation.runner import CandidateError, DecodeOutput, EncodeOutput, check_frame, check_payload
from sandbox import cgroup as cgroups
from sandbox import seccomp_policy
from sandbox import views

HARNESS_PATH = Path(__file__).with_name("_harness.py")
HEADER = struct.Struct("<cQ")

#: ``strict`` needs bubblewrap, seccomp, a session cgroup and an unprivileged
#: host uid; the others are weaker on purpose and only ever used when named
#: explicitly. Every result then says so.
MODES = ("strict", "no-cgroup", "no-seccomp", "unsandboxed")

#: The unprivileged system user candidates run as when the worker is root
#: (``scripts/setup.sh`` creates it); ``CODECFLEET_SANDBOX_USER`` overrides the name.
SANDBOX_USER = "codecfleet-sandbox"

#: Failure reasons that come from inside the sandbox are cut to this many bytes.
MAX_REASON_BYTES = 4096

_F_SETPIPE_SZ = 1031

#: The sandbox's first process waits here for the worker's ``go`` (after the
#: worker has moved it into its session cgroup), then becomes bubblewrap with
#: stdin from /dev/null. If the worker goes away first, ``read`` sees EOF and
#: nothing is executed.
_GATE_SHELL = "/bin/sh"
_GATE_SCRIPT = 'IFS= read -r go && [ "$go" = go ] && exec "$@" </dev/null; exit 125'
_GATE_GO = b"go\n"
_SANDBOX_ROOT = "/sandbox"
_SANDBOX_SITE = "/sandbox/site"


class IsolationError(RuntimeError):
    """The requested isolation is not available on this machine."""


class AbortedError(CandidateError):
    """:meth:`SandboxRunner.abort` stopped the call (not the candidate's fault)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed process (one encode or one decode).

    Times are seconds of wall clock, measured on the trusted side; sizes are bytes.
    """

    call_seconds: float = 60.0  # one compress/decompress call
    import_seconds: float = 60.0  # interpreter start plus importing the candidate (torch takes ~1-2 s)
    total_seconds: float = 1800.0  # the whole encode or decode session
    cpu_seconds: int = 3600  # RLIMIT_CPU; threads add up, so this is above total_seconds
    address_space_bytes: int = 16 << 30  # RLIMIT_AS, CPU only (CUDA reserves huge virtual ranges)
    tmpfs_bytes: int = 256 << 20  # /tmp, the only writable directory
    shm_bytes: int = 64 << 20  # /dev/shm
    max_file_bytes: int = 256 << 20  # RLIMIT_FSIZE
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_processes: int = 4096  # pids.max of the session cgroup, and RLIMIT_NPROC (threads count)
    memory_bytes: int = 8 << 30  # the session cgroup's memory limit: anon, shmem/memfd, tmpfs, page cache
    cpu_cores: float | None = 4.0  # the session cgroup's CPU ceiling, in cores (None: no ceiling)
    max_output_bytes: int = 1 << 20  # stdout and stderr, each; more fails the candidate
    max_payload_bytes: int = 64 << 20  # one compressed frame
    #: a whole bitstream may hold at most ratio x the raw frames' bytes, plus extra
    max_bitstream_ratio: float = 2.0
    max_bitstream_extra_bytes: int = 64 << 10
    threads: int | None = None  # OMP/MKL/torch thread count inside; None leaves the libraries' default


@dataclass
class IsolationReport:
    """What :func:`probe_isolation` found. ``strict_ok`` is what strict mode needs."""

    bwrap_path: str | None
    bwrap_version: str | None
    bwrap_ok: bool
    seccomp_ok: bool
    problems: list[str] = field(default_factory=list)
    #: a session cgroup (memory, pids, CPU) could be made and held the sandbox
    cgroup_ok: bool = False
    cgroup: str | None = None
    #: the host uid candidate code runs as, and whether it is unprivileged
    sandbox_uid: int | None = None
    uid_ok: bool = False
    #: decoders get their own memory-resident copy of the runtime (:mod:`sandbox.views`),
    #: and a sandbox started on it imported numpy and passed the same checks
    decoder_view_ok: bool = False
    decoder_view: str | None = None
    #: sessions forked from a template (one on the host files, one on the decoder view)
    #: passed the same checks, plus no capabilities and no unshare; not part of
    #: ``strict_ok``: without it every session starts cold
    template_ok: bool = False
    template: str | None = None

    @property
    def strict_ok(self) -> bool:
        return self.bwrap_ok and self.seccomp_ok and self.cgroup_ok and self.uid_ok and self.decoder_view_ok

    def to_dict(self) -> dict:
        return {**asdict(self), "strict_ok": self.strict_ok}


@dataclass
class CallLog:
    """What one sandboxed process printed (capped) and how it ended."""

    role: str
    token: str = ""  # on the sandboxed process's command line, to find it in /proc
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_total: int = 0
    stderr_total: int = 0
    returncode: int | None = None
    #: peak memory of the session's cgroup (None without one: nothing trustworthy to report)
    peak_rss_bytes: int | None = None
    #: the session cgroup was empty at the end (None: no cgroup, not checked)
    session_empty: bool | None = None
    #: host pids the session's cgroup held while it ran (for tests and post-mortems)
    pids_seen: list[int] = field(default_factory=list)
    #: the host uid the sandbox's first process ran as, read from /proc after it started
    host_uid: int | None = None
    #: seconds from the start of the call that timed out to the kill (None: no timeout)
    timed_out_after: float | None = None
    #: "template" (forked from this worker's template), "cold", or "cold (the template failed: why)"
    started_from: str = "cold"


# --------------------------------------------------------------------------- probing

_PROBE_CANDIDATE = """
import ctypes, os, socket
def _denied(fn):
    try:
        fn()
    except OSError:
        return True
    return False
def _fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
FORK_DENIED = _denied(_fork)
SOCKET_DENIED = _denied(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
EXEC_DENIED = _denied(lambda: os.execv("/usr/bin/true", ["true"]))
HOST_VISIBLE = os.path.exists(%r)
with open("/proc/self/status") as fh:
    STATUS = dict(line.split(":", 1) for line in fh if ":" in line)
FILTERED = STATUS.get("Seccomp", "").strip() == "2"
NO_NEW_PRIVS = STATUS.get("NoNewPrivs", "").strip() == "1"
ALONE = os.getpid() == 1 and sorted(p for p in os.listdir("/proc") if p.isdigit()) == ["1"]
NOT_DUMPABLE = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE
NO_CAPS = all(int(STATUS.get(k, "1").strip(), 16) == 0 for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))
UNSHARE_DENIED = _denied(lambda: os.unshare(0x10000000)) if hasattr(os, "unshare") else (
    ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0)
def compress_video_frame(frame, frame_index, config):
    return bytes([FORK_DENIED, SOCKET_DENIED, HOST_VISIBLE, EXEC_DENIED, FILTERED, NO_NEW_PRIVS, ALONE, NOT_DUMPABLE,
                  NO_CAPS, UNSHARE_DENIED])
def decompress_video_frame(compressed_data, frame_index, config):
    return None
"""


def _sandbox_credentials() -> tuple[tuple[int, int] | None, str | None]:
    """``((uid, gid), None)`` to switch to, ``(None, None)`` when this process is
    already unprivileged, or ``(None, problem)`` when root and the user is missing."""
    if os.geteuid() != 0:
        return None, None
    import pwd

    name = os.environ.get("CODECFLEET_SANDBOX_USER", SANDBOX_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None, (
            f"the worker is root and the unprivileged sandbox user {name!r} does not exist, "
            "so candidate code would run as host uid 0 (create it: scripts/setup.sh)"
        )
    if entry.pw_uid == 0:
        return None, f"the sandbox user {name!r} is uid 0"
    return (entry.pw_uid, entry.pw_gid), None


@functools.lru_cache(maxsize=8)
def _probe_cached(device: str, bwrap_name: str) -> IsolationReport:
    bwrap = shutil.which(bwrap_name)
    problems: list[str] = []
    version = None
    creds, uid_problem = _sandbox_credentials()
    sandbox_uid = creds[0] if creds else os.geteuid()
    uid_ok = uid_problem is None
    if uid_problem:
        problems.append(uid_problem)
    cgroup_ok, cgroup_note = cgroups.available()
    if not cgroup_ok:
        problems.append(f"no per-session cgroup: {cgroup_note}")
    if bwrap is None:
        problems.insert(0, "bubblewrap (bwrap) is not installed")
        return IsolationReport(None, None, False, False, problems, cgroup_ok, cgroup_note, sandbox_uid, uid_ok)
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        problems.append(f"bwrap --version failed: {exc}")
    limits = Limits(call_seconds=20, import_seconds=20, total_seconds=30, memory_bytes=1 << 30)
    code = _PROBE_CANDIDATE % str(HARNESS_PATH.resolve())
    frame = np.zeros((2, 2, 3), np.uint8)
    bwrap_ok = seccomp_ok = False
    view_ok, view_note = False, None
    try:
        view = _decoder_view()
        view_note = view.root
        if not view.resident:
            problems.append(
                f"the decoder view {view.root} is not on tmpfs: its pages can go cold, so decoders could "
                "time each other's reads (set CODECFLEET_VIEW_DIR to a tmpfs directory)"
            )
    except views.ViewError as exc:
        view = None
        problems.append(f"no decoder file view: {exc}")
    starting, early = None, []
    if view is not None and cgroup_ok and uid_ok and template_setting() != "off":
        # The two templates (each imports numpy and torch, never candidate code: seconds of
        # a worker's start-up) start while the cold probes below run; _probe_templates
        # checks them afterwards (a start that failed here is tried again, and reported,
        # there), and they are closed if the cold probes find the sandbox not strict.
        from concurrent.futures import ThreadPoolExecutor

        starting = ThreadPoolExecutor(2, thread_name_prefix="cf-template-start")
        early = [starting.submit(_get_template, "strict", device, Limits(), bwrap, v, view.key) for v in (None, view)]
    # One probe on the host's files (as encoders run), one on the decoder view (as decoders run).
    for which in ("encoder", "decoder"):
        if which == "decoder" and view is None:
            break
        try:
            session = _Session(
                "probe", "strict" if cgroup_ok else "no-cgroup", device, limits, bwrap,
                view=view if which == "decoder" else None,
            )
            try:
                session.start(code, {"width": 2, "height": 2})
                flags, _ = session.encode_frame(frame, 0)
                flags = bytes(flags)
                session.finish()
            finally:
                session.close()
            fork_denied, socket_denied, host_visible, exec_denied, filtered, nnp, alone, undumpable = flags[:8]
            ok_b = bool(not host_visible and alone)
            ok_s = bool(fork_denied and socket_denied and exec_denied and filtered and nnp)
            if which == "encoder":
                bwrap_ok, seccomp_ok = ok_b, ok_s
            else:
                view_ok = ok_b and ok_s and view.resident
            where = "" if which == "encoder" else " (decoder view)"
            for bad, what in (
                (host_visible, "the host file system is visible inside the sandbox"),
                (not fork_denied, "fork() is not denied inside the sandbox (seccomp not active)"),
                (not socket_denied, "socket() is not denied inside the sandbox (seccomp not active)"),
                (not exec_denied, "execve() is not denied inside the sandbox"),
                (not filtered, "the sandboxed process is not under a seccomp filter"),
                (not nnp, "no_new_privs is not set inside the sandbox"),
                (not alone, "the sandbox holds a process besides the harness (an init not under the filter)"),
                (not undumpable, "the sandboxed process is dumpable"),
            ):
                if bad:
                    problems.append(what + where)
            if cgroup_ok:
                if not session.log.pids_seen:
                    cgroup_ok = False
                    problems.append("the sandbox's processes did not appear in the session cgroup" + where)
                elif session.log.session_empty is not True:
                    cgroup_ok = False
                    problems.append("the session cgroup was not empty after the session" + where)
        except (CandidateError, OSError, IsolationError, cgroups.CgroupError) as exc:
            reason = exc.reason if isinstance(exc, CandidateError) else str(exc)
            if which == "decoder":
                problems.append(f"a sandboxed probe process on the decoder view {view.root} failed: {reason}")
                break
            problems.append(f"a sandboxed probe process failed: {reason}")
            if "pyseccomp" in reason or "seccomp" in reason.lower():
                bwrap_ok = True
            break
    if starting is not None:
        starting.shutdown(wait=True)
    report = IsolationReport(
        bwrap, version, bwrap_ok, seccomp_ok, problems, cgroup_ok, cgroup_note, sandbox_uid, uid_ok, view_ok, view_note
    )
    if report.strict_ok and template_setting() != "off":
        report.template_ok, report.template = _probe_templates(device, bwrap, limits, code, frame, view)
    else:
        for started in early:  # nothing may fork from a template the cold probes did not vouch for
            if started.exception() is None:
                started.result().close()
    return report


def _probe_templates(device, bwrap, limits, code, frame, view) -> tuple[bool, str]:
    """One session forked from each template (host files, decoder view), checked like a cold one."""
    for which in ("encoder", "decoder"):
        v = view if which == "decoder" else None
        try:
            template = _get_template("strict", device, Limits(), bwrap, v, view.key)
            # the probe's own small limits for the session; the template is the workers' one
            session = _Session("probe", "strict", device, limits, bwrap, view=v, template=template)
            try:
                session.start(code, {"width": 2, "height": 2})
                flags = bytes(session.encode_frame(frame, 0)[0])
                session.finish()
            finally:
                session.close()
        except (CandidateError, OSError, IsolationError, TemplateError, cgroups.CgroupError) as exc:
            reason = exc.reason if isinstance(exc, CandidateError) else str(exc)
            return False, f"a forked probe session ({which}) failed: {reason}"
        names = ("fork denied", "socket denied", "host hidden", "exec denied", "seccomp filter", "no_new_privs",
                 "alone in its pid namespace", "not dumpable", "no capabilities", "unshare denied")
        want = (1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
        bad = [n for n, got, w in zip(names, flags[:10], want) if bool(got) != bool(w)]
        if len(flags) < 10:
            bad.append("short probe answer")
        log = session.log
        if log.started_from != "template":
            bad.append(f"not forked ({log.started_from})")
        if not log.pids_seen or log.session_empty is not True:
            bad.append("session cgroup not held or not empty")
        if log.host_uid in (0, None):
            bad.append(f"host uid {log.host_uid}")
        if bad:
            return False, f"a forked probe session ({which}) failed: " + ", ".join(bad)
    return True, "forked sessions checked (host files and decoder view)"


def _decoder_view() -> "views.FileView":
    """This host's decoder view for the interpreter and packages this worker runs."""
    return views.decoder_view(
        os.path.realpath(sys.base_prefix), os.path.realpath(sys.executable), _site_dirs(), str(HARNESS_PATH.resolve())
    )


def probe_isolation(device: str = "cpu", *, bwrap: str = "bwrap", refresh: bool = False) -> IsolationReport:
    """Start one real sandboxed process and check from inside and outside that the layers hold.

    Inside, the probe candidate tries ``fork()``, ``socket()`` and ``execve()``,
    looks for a host file, reads its own seccomp and no_new_privs status, checks
    that it is alone in its pid namespace (pid 1, no separate init) and not
    dumpable. Outside, the trusted side checks that the sandbox ran as an
    unprivileged host uid inside its session cgroup, and that the cgroup was
    empty at the end. Strict mode needs all of it. Cached per process
    (``refresh`` re-probes).
    """
    if refresh:
        _probe_cached.cache_clear()
    return _probe_cached(device, bwrap)


def describe_mode(mode: str) -> str:
    if mode == "strict":
        return "bubblewrap+seccomp+rlimits"  # with a session cgroup and an unprivileged uid: strict needs both
    if mode == "no-cgroup":
        return (
            "WEAKER MODE 'no-cgroup': bubblewrap+seccomp+rlimits, NO session cgroup (memfd/shared memory, "
            "threads and CPU bounded by rlimits only; peak memory not measured)"
        )
    if mode == "no-seccomp":
        return "WEAKER MODE 'no-seccomp': bubblewrap+rlimits, NO seccomp filter (fork/exec/sockets possible inside the namespaces)"
    if mode == "unsandboxed":
        return "WEAKER MODE 'unsandboxed': separate process with rlimits only, NO bubblewrap, NO seccomp (host files readable)"
    raise ValueError(f"unknown sandbox mode {mode!r}; expected one of {MODES}")


# --------------------------------------------------------------------------- the runner


class SandboxRunner:
    """The :class:`evaluation.runner.CandidateRunner` for untrusted code.

    ``mode`` is ``"strict"`` (default: refuses to exist unless the probe finds
    bubblewrap, seccomp, a session cgroup and an unprivileged uid working), or
    one of the named weaker modes ``"no-cgroup"``, ``"no-seccomp"`` and
    ``"unsandboxed"``, which work without the probe and say so in
    :attr:`isolation` (and so in every result).
    """

    def __init__(
        self,
        limits: Limits = Limits(),
        device: str = "cpu",
        mode: str = "strict",
        *,
        bwrap: str = "bwrap",
        template: str | None = None,
    ):
        self.isolation = describe_mode(mode)
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.limits = limits
        self.device = device
        self.mode = mode
        self.logs: list[CallLog] = []
        self._bwrap = shutil.which(bwrap)
        self._abort_lock = threading.Lock()
        self._aborted: str | None = None
        self._current: _Session | None = None
        #: sessions are forked from this worker's template (strict mode, and only where the
        #: probe proved forked sessions isolated); ``template="off"`` or
        #: ``CODECFLEET_SANDBOX_TEMPLATE=off`` starts every session cold
        self.use_template = False
        self.template_problem: str | None = None
        template = template or template_setting()
        if template not in ("auto", "off"):
            raise ValueError(f"template must be 'auto' or 'off', got {template!r}")
        if mode == "strict":
            report = probe_isolation(device, bwrap=bwrap)
            if template == "auto":
                self.use_template = report.template_ok
                if not report.template_ok:
                    self.template_problem = report.template or "the probe did not prove forked sessions isolated"
            if not report.strict_ok:
                raise IsolationError(
                    "refusing to run candidates: strict isolation is unavailable ("
                    + "; ".join(report.problems)
                    + "). Install bubblewrap and libseccomp, create the sandbox user and give the worker "
                    "a writable cgroup (scripts/setup.sh, Delegate=yes), or choose a weaker mode by name."
                )
        elif mode in ("no-seccomp", "no-cgroup") and self._bwrap is None:
            raise IsolationError(f"mode {mode!r} still needs bubblewrap, which is not installed")
        if mode != "unsandboxed":
            creds, problem = _sandbox_credentials()
            if problem:
                if mode == "strict":
                    raise IsolationError(f"refusing to run candidates: {problem}")
                self.isolation += f"; CANDIDATE RUNS AS HOST ROOT ({problem})"
        if mode != "no-cgroup":
            cgroups.sweep_stale()
        #: decoders run on their own memory-resident copy of the runtime (issue 12, finding 2)
        self.decoder_view: views.FileView | None = None
        if mode != "unsandboxed":
            try:
                self.decoder_view = _decoder_view()
            except views.ViewError as exc:
                if mode == "strict":
                    raise IsolationError(f"refusing to run candidates: no decoder file view ({exc})") from exc
                self.isolation += f"; DECODER SHARES THE ENCODER'S FILES (page-cache timing channel open: {exc})"
        if self.use_template:
            self._warm_templates()

    def _warm_templates(self) -> None:
        """Start (or find) the encoders' and decoders' templates now, not in the first session."""
        for view in (None, self.decoder_view):
            try:
                _get_template(self.mode, self.device, self.limits, self._bwrap, view,
                              self.decoder_view.key if self.decoder_view is not None else "")
            except TemplateError as exc:
                self.template_problem = str(exc)  # each session retries, and starts cold if it must

    def _session(self, role: str, slot_bytes: int) -> "_Session":
        template, problem = None, None
        if self.use_template and self._aborted is None:
            # Outside the abort lock: a first template takes a second or two to import torch.
            view = self.decoder_view if role == "decoder" else None
            if view is not None and not view.intact():
                view = None  # rebuilt below; this session starts cold
            else:
                try:
                    template = _get_template(
                        self.mode, self.device, self.limits, self._bwrap, view,
                        self.decoder_view.key if self.decoder_view is not None else "",
                    )
                except TemplateError as exc:
                    problem = str(exc)
        with self._abort_lock:
            if self._aborted is not None:
                raise AbortedError("encode" if role == "encoder" else "decode", self._aborted)
            view = None
            if role == "decoder" and self.decoder_view is not None:
                if not self.decoder_view.intact():  # swept or cleared: build it again
                    try:
                        self.decoder_view = _decoder_view()
                    except views.ViewError as exc:
                        raise IsolationError(f"the decoder file view is gone and cannot be rebuilt: {exc}") from exc
                view = self.decoder_view
            if template is not None and template.view is not view:
                template = None  # the view was rebuilt meanwhile
            session = _Session(
                role, self.mode, self.device, self.limits, self._bwrap, slot_bytes=slot_bytes, view=view,
                template=template, template_problem=problem,
            )
            self._current = session
            return session

    def abort(self, reason: str = "the run was aborted") -> None:
        """Kill the sandbox now running, if any; thread-safe.

        The call in flight raises :class:`AbortedError` (a ``CandidateError``
        whose reason is ``reason``) as soon as its process is gone, and so does
        every later :meth:`encode` or :meth:`decode` of this runner, at once:
        an aborted runner stays aborted.
        """
        with self._abort_lock:
            if self._aborted is None:
                self._aborted = reason
            session = self._current
        if session is not None:
            session.abort(self._aborted)

    @property
    def aborted(self) -> bool:
        return self._aborted is not None

    def _done(self, session: "_Session") -> None:
        with self._abort_lock:
            if self._current is session:
                self._current = None

    def encode(self, code: str, frames: np.ndarray, config: dict) -> EncodeOutput:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        session = self._session("encoder", frames[0].nbytes if len(frames) else 1)
        cap = bitstream_cap(frames.nbytes, self.limits)
        payloads = SpooledPayloads()
        frame_seconds: list[float] = []
        try:
            session.start(code, config)
            for i in range(frames.shape[0]):
                # Checked against the header before a byte of the payload is read.
                budget = cap - payloads.total_bytes
                payload, seconds = session.encode_frame(frames[i], i, total_budget=(budget, cap))
                payloads.append(check_payload(payload, i, self.limits.max_payload_bytes))
                frame_seconds.append(seconds)
            session.finish()
        except BaseException:
            payloads.close()
            raise
        finally:
            session.close()
            self._done(session)
            self.logs.append(session.log)
            _check_empty(session)
        return EncodeOutput(payloads, float(sum(frame_seconds)), frame_seconds, session.log.peak_rss_bytes)

    def decode(
        self, code: str, payloads: list[bytes], config: dict, n_frames: int, *, on_frame=None
    ) -> DecodeOutput:
        """Decode ``n_frames`` payloads in a fresh decoder sandbox.

        With ``on_frame(index, frame)`` each checked frame is handed over as it
        arrives, in one buffer reused for the next frame (copy what you keep), and
        the result's ``frames`` is None: this side holds one decoded frame, not
        the clip. The candidate's call time excludes the callback's.
        """
        if len(payloads) != n_frames:
            raise CandidateError("verify", f"bitstream holds {len(payloads)} frames, expected {n_frames}")
        height, width = int(config["height"]), int(config["width"])
        if on_frame is None:
            out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
        else:
            out, buffer = None, np.empty((height, width, 3), dtype=np.uint8)
        frame_seconds: list[float] = []
        session = self._session("decoder", _max_decoded_bytes(height, width))
        try:
            session.start(code, config)
            for i in range(n_frames):  # in index order, whatever the candidate does
                into = out[i] if out is not None else buffer
                frame, seconds = session.decode_frame(payloads[i], i, height, width, into=into)
                check_frame(frame, i, height, width)
                frame_seconds.append(seconds)
                if on_frame is not None:
                    on_frame(i, frame)
            session.finish()
        finally:
            session.close()
            self._done(session)
            self.logs.append(session.log)
            _check_empty(session)
        return DecodeOutput(out, float(sum(frame_seconds)), frame_seconds, session.log.peak_rss_bytes)


def bitstream_cap(raw_bytes: int, limits: Limits) -> int:
    """The most bytes one bitstream may hold: ``ratio x raw + extra`` (see :class:`Limits`)."""
    return int(limits.max_bitstream_ratio * raw_bytes) + int(limits.max_bitstream_extra_bytes)


def _check_empty(session: "_Session") -> None:
    """After a session: its cgroup must have been emptied, or the worker stops trusting itself."""
    if session.log.session_empty is False:
        raise IsolationError(
            f"the {session.role} session's cgroup still held processes after it was killed: "
            "refusing to go on (the host needs attention)"
        )


class SpooledPayloads(Sequence):
    """Per-frame payloads kept in an unlinked temporary file, not in this process's memory.

    A list of ``bytes`` to every reader (indexing reads one payload back; it
    compares equal to a list of the same payloads), so however much a
    candidate returns, the trusted side holds one payload at a time.
    """

    def __init__(self):
        import tempfile

        self._file = tempfile.TemporaryFile(prefix="cf-payloads-")
        self._spans: list[tuple[int, int]] = []
        self.total_bytes = 0

    def append(self, payload: bytes) -> None:
        self._file.write(payload)
        self._spans.append((self.total_bytes, len(payload)))
        self.total_bytes += len(payload)

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        offset, length = self._spans[index]
        self._file.flush()
        return os.pread(self._file.fileno(), length, offset)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SpooledPayloads({len(self)} payloads, {self.total_bytes} bytes)"

    def close(self) -> None:
        self._file.close()


# --------------------------------------------------------------------------- one sandboxed process


def _process_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    return int(line.split()[2])  # effective
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cap_reason(text: str, limit: int = MAX_REASON_BYTES) -> str:
    """A reason from inside the sandbox, cut to ``limit`` bytes of UTF-8."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + f" [... cut at {limit} bytes]"


def _parse_frame_meta(data: bytes) -> dict:
    """The decoder's ``{"shape": [...], "dtype": "..."}``, with the nesting bounded
    *before* parsing (a legitimate one opens exactly one object and one list)."""
    if len(data) > 256:
        raise ValueError(f"{len(data)}-byte frame description")
    if data.count(b"[") + data.count(b"{") > 2:
        raise ValueError("frame description nested too deep")
    meta = json.loads(data)
    if not isinstance(meta, dict):
        raise ValueError("frame description is not an object")
    return meta


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _site_dirs() -> list[str]:
    """The directories holding numpy and torch (usually one site-packages)."""
    dirs: list[str] = []
    for name in ("numpy", "torch"):
        try:
            spec = __import__("importlib.util").util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        site = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        site = str(site.resolve())
        if site not in dirs:
            dirs.append(site)
    return dirs


def _nvidia_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("nvidia*"))


def _max_decoded_bytes(height: int, width: int) -> int:
    """float64 RGB is the biggest frame a decoder may plausibly return; more is refused."""
    return height * width * 3 * 8


_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class _Slot:
    """The shared-memory frame slot: a sealed memfd, mapped read-write on this side.

    Its size can never change (sealed), so this side's mapping cannot fault
    whatever the sandbox does with its copy of the descriptor.
    """

    def __init__(self, nbytes: int):
        page = mmap.PAGESIZE
        self.size = max(page, -(-nbytes // page) * page)
        self.fd = os.memfd_create("cf-frame-slot", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, self.size)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, _SEALS)
            if fcntl.fcntl(self.fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
                raise OSError("memfd seals did not hold")
            self.map = mmap.mmap(self.fd, self.size, access=mmap.ACCESS_WRITE)
        except BaseException:
            os.close(self.fd)
            raise
        self.array = np.frombuffer(self.map, dtype=np.uint8)

    def close_fd(self) -> None:
        """Drop the descriptor once the sandbox has inherited it (the mapping stays)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.close_fd()
        self.array = None
        try:
            self.map.close()
        except BufferError:  # a view still exported: the mapping goes with the last view
            pass


# --------------------------------------------------------------------------- templates (zygotes)

#: sessions forked from one template before it is replaced by a fresh one
TEMPLATE_MAX_FORKS = 256
#: the template's own cgroup's memory limit (it holds numpy and torch, nothing else)
TEMPLATE_MEMORY_BYTES = 4 << 30
#: the template's command line holds this where a forked session writes its token
#: (same length), so a session is found by its token like a cold one
_TEMPLATE_PLACEHOLDER = "cf-template-slot-" + "0" * 26
#: where a forked session finds the frame slot's descriptor (``_harness._SLOT_FD``)
_FORKED_SLOT_FD = 1003


class TemplateError(RuntimeError):
    """The template could not start or fork a session: that session starts cold, and says so."""


def template_setting() -> str:
    """``CODECFLEET_SANDBOX_TEMPLATE``: ``auto`` (default: used where the probe proved
    forked sessions isolated) or ``off``."""
    value = os.environ.get("CODECFLEET_SANDBOX_TEMPLATE", "auto").strip().lower()
    return "off" if value in ("0", "off", "no", "false") else "auto"


def _template_modules() -> tuple[str, ...]:
    """What the template imports: numpy, and torch where this worker has it (and
    ``CODECFLEET_TEMPLATE_TORCH`` is not 0)."""
    import importlib.util

    mods = ["numpy"]
    if os.environ.get("CODECFLEET_TEMPLATE_TORCH", "1").strip() != "0":
        try:
            if importlib.util.find_spec("torch") is not None:
                mods.append("torch")
        except (ImportError, ValueError):
            pass
    return tuple(mods)


class _Keeper:
    """One long-lived thread starts every template: ``bwrap --die-with-parent`` ties
    the template's life to the *thread* that forked it, and a template outlives the
    thread that first asked for it."""

    def __init__(self):
        import queue

        self._q: "queue.Queue" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn):
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="cf-template-keeper")
                self._thread.start()
        done, box = threading.Event(), {}
        self._q.put((fn, done, box))
        done.wait()
        if "exc" in box:
            raise box["exc"]
        return box["value"]

    def _loop(self):
        while True:
            fn, done, box = self._q.get()
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed back to the caller
                box["exc"] = exc
            finally:
                done.set()


_KEEPER = _Keeper()


def _nspids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


class _Template:
    """A sandboxed process, started exactly like a session, that sessions are forked from.

    It runs the harness in template mode (``harness.py --template``): it imports
    numpy (and torch), stops OpenBLAS's thread pool, bans ``execve`` for itself,
    and then only forks on an ``F`` request on its control socket, handing the
    child the session's own pipes and frame slot. It never sees frames,
    bitstreams or candidate code, and never touches CUDA. Its seccomp program is
    the session's less :data:`seccomp_policy.TEMPLATE_ALLOWED`; see
    ``_harness._session_child`` for what each session does before its candidate loads.
    """

    def __init__(self, mode, device, limits: Limits, bwrap, view, modules):
        self.mode, self.device, self.limits, self.bwrap, self.view = mode, device, limits, bwrap, view
        self.modules = modules
        self.forks = 0
        #: the worker process that started it (a process forked from the worker, such as
        #: a pool child, starts its own: the control socket is not shared)
        self.owner = os.getpid()
        #: resident bytes of the template after the interpreter, the harness and numpy
        #: (before torch): what every forked session has without being charged for it
        self.base_rss = 0
        self.broken: str | None = None
        self.proc: subprocess.Popen | None = None
        self._sock = None
        self._cgroup: cgroups.SessionCgroup | None = None
        self._fork_lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: list[bytes] = []
        import collections

        self._status: "collections.OrderedDict[int, int]" = collections.OrderedDict()
        self._stderr = b""

    # ------------------------------------------------------------ start, stop

    def start(self) -> None:
        import socket

        lim = self.limits
        creds, problem = _sandbox_credentials()
        if problem:
            raise TemplateError(problem)
        try:
            if self.mode == "strict":
                # Its own cgroup: imports only (numpy, torch); sessions leave it at their gate.
                self._cgroup = cgroups.SessionCgroup(TEMPLATE_MEMORY_BYTES, 1024, None, tag="template")
            helper = _Session("template", self.mode, self.device, lim, self.bwrap, view=self.view)
            program = seccomp_policy.compile_bpf("template")
            seccomp_fd = os.memfd_create("cf-seccomp", os.MFD_CLOEXEC)
            os.write(seccomp_fd, program)
            os.lseek(seccomp_fd, 0, os.SEEK_SET)
            helper._seccomp_fd = seccomp_fd
            argv, inside_sites = helper._argv(_site_dirs())
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            argv = [_GATE_SHELL, "-c", _GATE_SCRIPT, "cf-gate", *argv, "--template", str(child.fileno()),
                    _TEMPLATE_PLACEHOLDER]
            user_args = {"user": creds[0], "group": creds[1], "extra_groups": []} if creds else {}
            try:
                self.proc = _KEEPER.call(lambda: subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    pass_fds=[child.fileno(), seccomp_fd], env={}, cwd="/", start_new_session=True,
                    close_fds=True, **user_args,
                ))
            finally:
                child.close()
                os.close(seccomp_fd)
            self._sock = parent
            _admit_pid(self.proc.pid, self._cgroup)
            self.proc.stdin.write(_GATE_GO)
            self.proc.stdin.close()
            threading.Thread(target=self._drain_stderr, daemon=True).start()
            init = {"modules": list(self.modules), "sys_path": inside_sites,
                    "exec_bpf": base64.b64encode(seccomp_policy.compile_bpf("inner")).decode("ascii")}
            parent.sendall(json.dumps(init).encode())
            parent.settimeout(lim.import_seconds)
            try:
                msg = parent.recv(1 << 20)
            except socket.timeout:
                msg = b""
            parent.settimeout(None)
            if msg[:1] != b"R":
                raise TemplateError(
                    "the template did not come up: "
                    + (_cap_reason(msg[1:].decode("utf-8", "replace"), 300) if msg else self._why_gone())
                )
            ready = json.loads(msg[1:])
            self.base_rss = int(ready.get("base_rss") or 0)
            if int(ready.get("threads", 0)) != 1:
                raise TemplateError(f"the template holds {ready.get('threads')} threads after its imports")
            threading.Thread(target=self._read_loop, daemon=True, name="cf-template-reader").start()
        except (OSError, IsolationError, cgroups.CgroupError, ValueError) as exc:
            self.close()
            raise TemplateError(f"the template could not start: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _drain_stderr(self) -> None:
        stream = self.proc.stderr if self.proc else None
        if stream is None:
            return
        while True:
            try:
                chunk = stream.read1(1 << 14)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
                return
            self._stderr = (self._stderr + chunk)[-4096:]

    def _why_gone(self) -> str:
        time.sleep(0.05)
        tail = self._stderr.decode("utf-8", "replace").strip().splitlines()
        return tail[-1][:300] if tail else "its control socket closed"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.broken is None

    def close(self) -> None:
        """Kill the template and everything still in its cgroup; remove the cgroup."""
        if self.broken is None:
            self.broken = "closed"
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            for stream in (self.proc.stdin,):  # stderr: its drain closes it at EOF
                if stream is not None:
                    try:
                        stream.close()
                    except (OSError, ValueError):
                        pass
        if self._cgroup is not None:
            if self._cgroup.kill():
                self._cgroup.remove()
            self._cgroup = None

    # ------------------------------------------------------------ talking to it

    def _read_loop(self) -> None:
        sock = self._sock
        while True:
            try:
                msg = sock.recv(1 << 16)
            except OSError:
                msg = b""
            with self._cond:
                if not msg:
                    if self.broken is None:
                        self.broken = "the template ended (" + self._why_gone() + ")"
                    self._cond.notify_all()
                    return
                if msg[:1] == b"W":
                    try:
                        pid, status = (int(x) for x in msg[1:].split())
                    except ValueError:
                        continue
                    self._status[pid] = status
                    while len(self._status) > 4096:
                        self._status.popitem(last=False)
                else:
                    self._replies.append(msg)
                self._cond.notify_all()

    def fork(self, token: str, fds: list[int], spec: dict) -> int:
        """Have the template fork a session child; returns that child's pid in the template."""
        import socket

        with self._fork_lock:
            if not self.alive():
                raise TemplateError(self.broken or "the template is gone")
            body = b"F" + json.dumps({**spec, "token": token, "placeholder": _TEMPLATE_PLACEHOLDER}).encode()
            try:
                socket.send_fds(self._sock, [body], fds)
            except OSError as exc:
                self.broken = f"its control socket failed: {exc}"
                raise TemplateError(self.broken) from exc
            with self._cond:
                if not self._cond.wait_for(lambda: self._replies or self.broken, timeout=10.0):
                    self.broken = "it did not answer a fork request within 10 s"
                if not self._replies:
                    raise TemplateError(self.broken or "no answer")
                reply = self._replies.pop(0)
            if reply[:1] != b"P":
                self.broken = "it refused to fork: " + _cap_reason(reply[1:].decode("utf-8", "replace"), 300)
                raise TemplateError(self.broken)
            self.forks += 1
            return int(reply[1:])

    def host_pid(self, ns_pid: int, deadline: float) -> int:
        """The host pid of the session that is pid 1 of its namespace and ``ns_pid`` in the template's."""
        assert self.proc is not None
        root = self.proc.pid
        while True:
            todo, seen = [root], set()
            while todo:
                p = todo.pop()
                if p in seen:
                    continue
                seen.add(p)
                ns = _nspids(p)
                if len(ns) >= 3 and ns[-1] == 1 and ns[-2] == ns_pid:
                    return p
                try:
                    for task in os.listdir(f"/proc/{p}/task"):
                        with open(f"/proc/{p}/task/{task}/children") as fh:
                            todo.extend(int(k) for k in fh.read().split())
                except (OSError, ValueError):
                    continue
            if time.monotonic() >= deadline:
                raise TemplateError(f"the forked session (pid {ns_pid} in the template) was not found on the host")
            time.sleep(0.0005)

    def exit_status(self, ns_pid: int, timeout: float) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: ns_pid in self._status or self.broken is not None, timeout=timeout)
            return self._status.pop(ns_pid, None)


_TEMPLATES: dict[tuple, _Template] = {}
_TEMPLATES_LOCK = threading.Lock()  # the two dicts; never held while a template starts
_STARTING: dict[tuple, threading.Lock] = {}  # per key: one start at a time, other keys in parallel


def _get_template(mode: str, device: str, limits: Limits, bwrap: str | None, view, packages_key: str) -> _Template:
    """This worker's template for (mode, device, file view, packages, thread setting):
    started on first use, replaced when it died, broke, or forked its quota. Templates
    of different keys (the encoder's and the decoder's) may start at the same time."""
    modules = _template_modules()
    creds, _ = _sandbox_credentials()
    key = (mode, device, bwrap, limits.threads, view.root if view is not None else "host", packages_key, modules,
           creds)
    with _TEMPLATES_LOCK:
        for other_key in [k for k, t in _TEMPLATES.items() if t.owner != os.getpid()]:
            inherited = _TEMPLATES.pop(other_key)  # our parent's: leave it running, drop our copy
            if inherited._sock is not None:
                inherited._sock.close()
        starting = _STARTING.setdefault(key, threading.Lock())
    with starting:
        with _TEMPLATES_LOCK:
            template = _TEMPLATES.get(key)
            if template is not None and (not template.alive() or template.forks >= TEMPLATE_MAX_FORKS):
                template.close()
                del _TEMPLATES[key]
                template = None
            if template is not None:
                return template
            # A new view key (packages changed) makes a new template; the old one goes.
            for other_key in [k for k in _TEMPLATES if k[:5] == key[:5] and k != key]:
                _TEMPLATES.pop(other_key).close()
        template = _Template(mode, device, limits, bwrap, view, modules)
        template.start()
        with _TEMPLATES_LOCK:
            _TEMPLATES[key] = template
        return template


def close_templates() -> None:
    """Kill every template of this worker (at exit, and in tests)."""
    with _TEMPLATES_LOCK:
        for template in _TEMPLATES.values():
            if template.owner == os.getpid():
                template.close()
        _TEMPLATES.clear()


import atexit  # noqa: E402

atexit.register(close_templates)


def _admit_pid(pid: int, cgroup: "cgroups.SessionCgroup | None") -> None:
    """See :meth:`_Session._admit`."""
    step = "reading its scheduling policy"
    try:
        policy = os.sched_getscheduler(pid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
        if policy in (os.SCHED_FIFO, os.SCHED_RR):
            step = "resetting its real-time scheduling policy to SCHED_OTHER"
            os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
        if cgroup is not None:
            step = f"moving it into its session cgroup {cgroup.name}"
            cgroup.join(pid)
    except OSError as exc:
        raise IsolationError(f"the sandbox could not be set up: {step} (process {pid}) failed: {exc}") from exc


class _ForkedProc:
    """What :class:`_Session` knows of a session forked from a template (in place of a Popen)."""

    def __init__(self, pid: int, pidfd: int, stdout, stderr, template: _Template, ns_pid: int):
        self.pid, self.pidfd, self.template, self.ns_pid = pid, pidfd, template, ns_pid
        self.stdin = None
        self.stdout, self.stderr = stdout, stderr
        self.returncode: int | None = None

    def exited(self) -> bool:
        return bool(select.select([self.pidfd], [], [], 0)[0])


class _Session:
    """One sandboxed Python process serving one role for one candidate."""

    def __init__(
        self,
        role: str,
        mode: str,
        device: str,
        limits: Limits,
        bwrap: str | None,
        *,
        slot_bytes: int | None = None,
        view: views.FileView | None = None,
        template: "_Template | None" = None,
        template_problem: str | None = None,
    ):
        self.role = role
        #: the template to fork this session from (None: a cold start)
        self.template = template
        self._template_problem = template_problem
        #: the file view bound in place of the host's runtime files (None: the host's own)
        self.view = view
        self.mode = mode
        self.device = device
        self.limits = limits
        self.bwrap = bwrap
        self.token = f"cf-sandbox-{uuid.uuid4().hex}"
        self.log = CallLog(role, self.token)
        self._finished = False
        self.stage = "import"
        self.proc: subprocess.Popen | None = None
        self._req_w = self._resp_r = -1
        self._seccomp_fd = -1
        self._deadline_total = 0.0
        self._killed_for: str | None = None
        self._lock = threading.Lock()
        self._drains: list[threading.Thread] = []
        self._aborted = False
        #: bytes of the shared frame slot; None: sized at start from the config
        self._slot_bytes = slot_bytes
        self._slot: _Slot | None = None
        self._cgroup: cgroups.SessionCgroup | None = None

    # ------------------------------------------------------------ process start

    def _argv(self, site_dirs: list[str]) -> tuple[list[str], list[str]]:
        python = os.path.realpath(sys.executable)
        prefix = os.path.realpath(sys.base_prefix)
        harness = str(HARNESS_PATH.resolve())
        if self.mode == "unsandboxed":
            return [python, "-I", "-S", "-B", harness], site_dirs
        lim = self.limits
        # Host paths, or the decoder view's copies of them (never both in one sandbox).
        src = self.view.source if self.view is not None else (lambda p: p)
        # --as-pid-1: the harness is the sandbox's only process; bwrap starts no
        # separate init, which would run outside the seccomp filter.
        argv = [
            self.bwrap, "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox", "--clearenv",
            "--setenv", "PATH", "/usr/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
            "--ro-bind", src("/usr"), "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        ]
        if lim.threads is not None:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                argv += ["--setenv", var, str(lim.threads)]
        # bwrap runs as the unprivileged sandbox user, which must be able to look
        # these paths up (scripts/setup.sh grants search permission on the way to
        # an interpreter under /root, say).
        if not prefix.startswith("/usr/"):
            argv += self._ro_bind(src(prefix), prefix)
        if not python.startswith((prefix + "/", "/usr/")):
            argv += self._ro_bind(src(python), python)
        if os.path.exists(src("/etc/ld.so.cache")):
            argv += self._ro_bind(src("/etc/ld.so.cache"), "/etc/ld.so.cache")
        inside_sites = []
        for n, site in enumerate(site_dirs):
            target = f"{_SANDBOX_SITE}{n}"
            argv += self._ro_bind(src(site), target)
            inside_sites.append(target)
        argv += self._ro_bind(src(harness), f"{_SANDBOX_ROOT}/harness.py")
        argv += ["--proc", "/proc", "--dev", "/dev"]
        if self.device == "cuda":
            for dev in _nvidia_devices():
                argv += ["--dev-bind", dev, dev]
            if os.path.isdir("/sys"):
                argv += ["--ro-bind", "/sys", "/sys"]
        argv += ["--size", str(lim.shm_bytes), "--tmpfs", "/dev/shm"]
        argv += ["--size", str(lim.tmpfs_bytes), "--tmpfs", "/tmp"]
        argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
        if self._seccomp_fd >= 0:
            argv += ["--seccomp", str(self._seccomp_fd)]
        argv += ["--", python, "-I", "-S", "-B", f"{_SANDBOX_ROOT}/harness.py"]
        return argv, inside_sites

    @staticmethod
    def _ro_bind(source: str, dest: str) -> list[str]:
        return ["--ro-bind", source, dest]

    def _seccomp_program_fd(self) -> int:
        """A memfd holding the outer BPF program, for ``bwrap --seccomp FD`` (read once, there)."""
        program = seccomp_policy.compile_bpf("outer")
        fd = os.memfd_create("cf-seccomp", os.MFD_CLOEXEC)
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def start(self, code: str, config: dict) -> None:
        if self.template is not None:
            try:
                self._start_forked(code, config)
                self.log.started_from = "template"
                return
            except TemplateError as exc:
                self._template_problem = str(exc)
        if self._template_problem:
            self.log.started_from = f"cold (the template failed: {_cap_reason(self._template_problem, 300)})"
        self._start_cold(code, config)

    def _start_forked(self, code: str, config: dict) -> None:
        """Fork this session from the template; :class:`TemplateError` (before anything
        of it ran) means start cold instead."""
        template = self.template
        assert template is not None
        lim = self.limits
        if self.mode == "strict":
            creds, problem = _sandbox_credentials()
            if problem:
                raise IsolationError(f"refusing to run candidates: {problem}")
            try:
                # The interpreter and numpy it shares with the template count against its
                # limit as they would in a cold session (see close(): peak memory).
                self._cgroup = cgroups.SessionCgroup(
                    max(lim.memory_bytes - template.base_rss, 16 << 20), lim.max_processes, lim.cpu_cores
                )
            except cgroups.CgroupError as exc:
                raise IsolationError(f"refusing to run candidates: {exc}") from exc
        if self._slot_bytes is None:
            h, w = int(config["height"]), int(config["width"])
            self._slot_bytes = h * w * 3 if self.role != "decoder" else _max_decoded_bytes(h, w)
        self._slot = _Slot(self._slot_bytes)
        pipes = [os.pipe() for _ in range(4)]  # request, response, stdout, stderr
        for pair in pipes[:2]:
            for fd in pair:
                try:
                    fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
                except OSError:
                    pass
        (req_r, req_w), (resp_r, resp_w), (out_r, out_w), (err_r, err_w) = pipes
        self._req_w, self._resp_r = req_w, resp_r
        self._deadline_total = time.monotonic() + lim.total_seconds
        deadline = time.monotonic() + min(10.0, lim.import_seconds)
        ns_pid = host_pid = pidfd = None
        try:
            try:
                template.fork(self.token, [req_r, resp_w, out_w, err_w, self._slot.fd],
                              {"tmp": lim.tmpfs_bytes, "shm": lim.shm_bytes})
            finally:
                for fd in (req_r, resp_w, out_w, err_w):
                    os.close(fd)
                self._slot.close_fd()
            # The child answers "G" with the session's pid in the template's namespace.
            kind, body = self._recv_raw(deadline)
            if kind != b"G" or len(body) != 8:
                raise TemplateError("the forked session could not be set up: "
                                    + _cap_reason(bytes(body).decode("utf-8", "replace"), 300))
            ns_pid = struct.unpack("<q", body)[0]
            host_pid = template.host_pid(ns_pid, deadline)
            pidfd = os.pidfd_open(host_pid)
            ns = _nspids(host_pid)
            if len(ns) < 3 or ns[-1] != 1 or ns[-2] != ns_pid:
                raise TemplateError("the forked session's pid changed hands while it was looked up")
        except BaseException as exc:
            if pidfd is not None:
                os.close(pidfd)
            for fd in (out_r, err_r):
                os.close(fd)
            # Whatever the template forked is not accounted for: the template goes.
            template.broken = template.broken or f"a fork went wrong: {exc}"
            template.close()
            self._close_fds_and_slot()
            if self._cgroup is not None:
                self._cgroup.kill()
                self._cgroup.remove()
                self._cgroup = None
            raise
        self.proc = _ForkedProc(  # type: ignore[assignment]
            host_pid, pidfd, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0), template, ns_pid
        )
        try:
            self._admit(host_pid)
        except IsolationError:
            self._kill()
            if self._aborted:
                raise AbortedError(self._blame, self._killed_for or "aborted") from None
            raise
        if self._cgroup is not None:
            self.log.pids_seen = self._cgroup.pids()
        self.log.host_uid = _process_uid(host_pid)
        if self.mode == "strict" and self.log.host_uid in (0, None):
            self._kill()
            raise IsolationError(f"the forked session runs as host uid {self.log.host_uid}")
        with self._lock:
            aborted_before_start = self._killed_for is not None
        if aborted_before_start:  # abort() came while the session was being forked
            self._kill()
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            t = threading.Thread(target=self._drain, args=(stream, name), daemon=True)
            t.start()
            self._drains.append(t)
        # The init message is the gate: the session waits for it, in its cgroup now.
        programs = [seccomp_policy.compile_bpf("outer"), seccomp_policy.compile_bpf("inner")]
        self._handshake(code, config, _FORKED_SLOT_FD, self._inside_sites(),
                        [base64.b64encode(p).decode("ascii") for p in programs])

    def _inside_sites(self) -> list[str]:
        return [f"{_SANDBOX_SITE}{n}" for n in range(len(_site_dirs()))]

    def _recv_raw(self, deadline: float) -> tuple[bytes, bytes]:
        """One message before the session is known (no process to blame yet)."""
        def read(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._resp_r], [], [], left)[0]:
                    raise TemplateError("the forked session did not report in time")
                chunk = os.read(self._resp_r, n - len(buf))
                if not chunk:
                    raise TemplateError("the forked session closed its pipe before reporting")
                buf += chunk
            return buf

        kind, length = HEADER.unpack(read(HEADER.size))
        if length > MAX_REASON_BYTES:
            raise TemplateError("the forked session sent an oversized report")
        return kind, read(length)

    def _close_fds_and_slot(self) -> None:
        for fd in (self._req_w, self._resp_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._req_w = self._resp_r = -1
        if self._slot is not None:
            self._slot.close()
            self._slot = None

    def _start_cold(self, code: str, config: dict) -> None:
        if self.mode != "unsandboxed" and not self.bwrap:
            raise IsolationError("bubblewrap is not installed")
        lim = self.limits
        creds = None
        if self.mode != "unsandboxed":
            creds, problem = _sandbox_credentials()
            if problem and self.mode == "strict" and self.role != "probe":
                raise IsolationError(f"refusing to run candidates: {problem}")
        if self.mode != "no-cgroup":
            try:
                self._cgroup = cgroups.SessionCgroup(lim.memory_bytes, lim.max_processes, lim.cpu_cores)
            except cgroups.CgroupError as exc:
                if self.mode == "strict":
                    raise IsolationError(f"refusing to run candidates: {exc}") from exc
                self._cgroup = None  # the weaker modes take a cgroup where there is one
        self._seccomp_fd = self._seccomp_program_fd() if self.mode in ("strict", "no-cgroup") else -1
        site_dirs = _site_dirs()
        argv, inside_sites = self._argv(site_dirs)
        if self._slot_bytes is None:
            h, w = int(config["height"]), int(config["width"])
            self._slot_bytes = h * w * 3 if self.role != "decoder" else _max_decoded_bytes(h, w)
        self._slot = _Slot(self._slot_bytes)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        for fd in (req_r, req_w, resp_r, resp_w):
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass  # a smaller pipe is only slower
        argv = [_GATE_SHELL, "-c", _GATE_SCRIPT, "cf-gate", *argv, str(req_r), str(resp_w), self.token]
        env = {"PATH": "/usr/bin", "LANG": "C.UTF-8"} if self.mode == "unsandboxed" else {}
        workdir = None
        if self.mode == "unsandboxed":
            import tempfile

            workdir = tempfile.mkdtemp(prefix="cf-unsandboxed-")
            env["HOME"] = workdir
        self._workdir = workdir
        self._deadline_total = time.monotonic() + self.limits.total_seconds
        pass_fds = [req_r, resp_w, self._slot.fd] + ([self._seccomp_fd] if self._seccomp_fd >= 0 else [])
        user_args = {"user": creds[0], "group": creds[1], "extra_groups": []} if creds else {}
        # No preexec_fn: no Python code runs between fork and exec (unsafe with
        # threads, and its errors come back as a bare "Exception occurred in
        # preexec_fn"). The process starts held at the gate instead, see _admit.
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=pass_fds,
                env=env,
                cwd=workdir or "/",
                start_new_session=True,
                close_fds=True,
                **user_args,
            )
        except BaseException as exc:
            os.close(req_w)
            os.close(resp_r)
            if isinstance(exc, OSError):
                who = f" as uid {creds[0]} gid {creds[1]}" if creds else ""
                raise IsolationError(
                    f"the sandbox could not be set up: starting its first process ({_GATE_SHELL}{who}) failed: {exc}"
                ) from exc
            raise
        finally:
            os.close(req_r)
            os.close(resp_w)
            slot_fd = self._slot.fd
            self._slot.close_fd()
            if self._seccomp_fd >= 0:
                os.close(self._seccomp_fd)
                self._seccomp_fd = -1
        self._req_w, self._resp_r = req_w, resp_r
        try:
            self._admit(self.proc.pid)
        except IsolationError:
            self._kill()
            if self._aborted:  # abort() killed it at the gate: that, not the set-up, is the story
                raise AbortedError(self._blame, self._killed_for or "aborted") from None
            raise
        if self._cgroup is not None:
            self.log.pids_seen = self._cgroup.pids()
        self.log.host_uid = _process_uid(self.proc.pid)
        with self._lock:
            aborted_before_start = self._killed_for is not None
        if aborted_before_start:  # abort() came while the process was being made
            self._kill()
        else:
            self._release()
        for stream, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            t = threading.Thread(target=self._drain, args=(stream, name), daemon=True)
            t.start()
            self._drains.append(t)
        self._handshake(
            code, config, slot_fd, inside_sites if self.mode != "unsandboxed" else site_dirs,
            base64.b64encode(seccomp_policy.compile_bpf("inner")).decode("ascii") if self._seccomp_on else None,
        )

    def _handshake(self, code: str, config: dict, slot_fd: int, sys_path: list[str], seccomp_bpf) -> None:
        lim = self.limits
        init = {
            "role": self.role,
            "config": config,
            "sys_path": sys_path,
            "slot": {"fd": slot_fd, "bytes": self._slot.size},
            "seccomp": "on" if self._seccomp_on else "off",
            "seccomp_bpf": seccomp_bpf,
            "limits": {
                "cpu_seconds": lim.cpu_seconds,
                "max_file_bytes": lim.max_file_bytes,
                "max_open_files": lim.max_open_files,
                "address_space_bytes": lim.address_space_bytes if self.device == "cpu" else None,
                "max_processes": lim.max_processes,
                "max_payload_bytes": lim.max_payload_bytes,
            },
        }
        head = json.dumps(init).encode()
        code_bytes = code.encode("utf-8")
        deadline = time.monotonic() + lim.import_seconds
        self._send(b"I", struct.pack("<Q", len(head)), head, code_bytes, deadline=deadline)
        # The harness says whether the sandbox is set up *before* it imports the
        # candidate; from then on no message can speak for the sandbox (an "S"
        # later is the candidate's forgery, a candidate failure).
        self.stage = "setup"
        kind, body = self._recv(deadline, "setting up the sandbox", expect=b"A", max_len=0)
        if kind != b"A":
            self._fail_from_message(kind, body)
        self.stage = "import"
        kind, body = self._recv(deadline, "importing the candidate", expect=b"R", max_len=0)
        if kind != b"R":
            self._fail_from_message(kind, body)
        self.stage = "encode" if self.role in ("encoder", "probe") else "decode"

    def _admit(self, pid: int) -> None:
        """Make the process held at the gate fit to become the sandbox; it runs nothing meanwhile.

        * A real-time scheduling policy inherited from the worker's thread is
          reset to ``SCHED_OTHER`` (libraries such as SVT-AV1 switch the calling
          thread to ``SCHED_FIFO`` 99 when run as root; a candidate must never
          run real-time, and a v1 cpu cgroup without an RT budget refuses such a
          process with ``EINVAL``).
        * It is moved into every hierarchy of the session cgroup, and checked to be there.
        """
        _admit_pid(pid, self._cgroup)

    def _release(self) -> None:
        """Let the process at the gate ``exec`` the sandbox."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(_GATE_GO)
            self.proc.stdin.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it is gone (killed): the first message to it reports that
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    @property
    def _blame(self) -> str:
        """The stage a candidate failure is filed under (set-up counts as import)."""
        return "import" if self.stage == "setup" else self.stage

    @property
    def _seccomp_on(self) -> bool:
        return self.mode in ("strict", "no-cgroup")

    # ------------------------------------------------------------ calls

    def encode_frame(
        self, frame: np.ndarray, index: int, *, total_budget: tuple[int, int] | None = None
    ) -> tuple[bytes, float]:
        """Encode one frame; ``total_budget`` is (bytes left, whole cap) of the bitstream."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        height, width = frame.shape[:2]
        assert self._slot is not None
        if frame.nbytes > self._slot.size:
            raise ValueError(f"frame of {frame.nbytes} bytes does not fit the {self._slot.size}-byte slot")
        what = f"compress_video_frame(frame {index})"
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.limits.call_seconds
        np.copyto(self._slot.array[: frame.nbytes].reshape(frame.shape), frame)
        self._send(b"E", struct.pack("<qqq", index, height, width), deadline=deadline)
        kind, body = self._recv(
            deadline, what, expect=b"B", max_len=self.limits.max_payload_bytes, total_budget=total_budget
        )
        seconds = time.perf_counter() - t0
        if kind != b"B":
            self._fail_from_message(kind, body)
        return bytes(body), seconds

    def decode_frame(
        self, payload: bytes, index: int, height: int, width: int, *, into: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """Decode one frame; the result is this side's own copy, never a view of the slot.

        With ``into`` (an ``(height, width, 3)`` uint8 array) a frame of that shape
        and dtype is copied straight into it and ``into`` is returned.
        """
        what = f"decompress_video_frame(frame {index})"
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.limits.call_seconds
        self._send(b"D", struct.pack("<q", index), payload, deadline=deadline)
        kind, body = self._recv(deadline, what, expect=b"F", max_len=256)
        seconds = time.perf_counter() - t0
        if kind != b"F":
            self._fail_from_message(kind, body)
        assert self._slot is not None
        try:
            meta = _parse_frame_meta(bytes(body))
            dtype = np.dtype(str(meta["dtype"]))
            shape = tuple(int(s) for s in meta["shape"])
            if dtype.kind not in "biuf" or dtype.hasobject or dtype.itemsize > 8:
                raise ValueError(f"dtype {dtype}")
            if len(shape) > 8 or any(s < 0 for s in shape):
                raise ValueError(f"shape {shape}")
            count = 1
            for s in shape:
                count *= s
            if count * dtype.itemsize > self._slot.size:
                # Only a tampered harness gets here: it checks the size before writing.
                raise ValueError(f"{count * dtype.itemsize} bytes claimed, the slot holds {self._slot.size}")
            view = self._slot.array[: count * dtype.itemsize].view(dtype).reshape(shape)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError, json.JSONDecodeError) as exc:
            raise CandidateError("verify", f"{what} returned a malformed frame ({_cap_reason(str(exc), 300)})") from None
        if into is not None and shape == into.shape and dtype == into.dtype:
            np.copyto(into, view)
            return into, seconds
        return view.copy(), seconds

    def finish(self) -> None:
        self._send(b"Q", b"")
        kind, body = self._recv(time.monotonic() + 5.0, "shutting down", expect=b"q", max_len=0)
        if kind != b"q":
            self._fail_from_message(kind, body)
        self._finished = True

    # ------------------------------------------------------------ plumbing

    def _drain(self, stream, name: str) -> None:
        cap = self.limits.max_output_bytes
        kept = bytearray()
        total = 0
        while True:
            chunk = stream.read1(1 << 16) if hasattr(stream, "read1") else stream.read(1 << 16)
            if not chunk:
                break
            total += len(chunk)
            if len(kept) < cap:
                kept += chunk[: cap - len(kept)]
            if total > cap and self._killed_for is None:
                self._kill(f"wrote more than {cap} bytes to {name} (the cap)")
        if name == "stdout":
            self.log.stdout, self.log.stdout_total = bytes(kept), total
        else:
            self.log.stderr, self.log.stderr_total = bytes(kept), total

    def _send(self, kind: bytes, *parts, deadline: float | None = None) -> None:
        length = sum(memoryview(p).nbytes for p in parts)
        try:
            for part in (HEADER.pack(kind, length), *parts):
                view = memoryview(part).cast("B")
                while len(view):
                    self._wait_fd(self._req_w, select.POLLOUT, "accepting input", deadline)
                    n = os.write(self._req_w, view)
                    view = view[n:]
        except (BrokenPipeError, ConnectionResetError):
            self._died("accepting input")

    def _wait_fd(self, fd: int, event: int, what: str, deadline: float | None = None) -> None:
        deadline = deadline if deadline is not None else self._deadline_total
        poller = select.poll()
        poller.register(fd, event)
        while True:
            now = time.monotonic()
            limit = min(deadline, self._deadline_total)
            if now >= limit:
                self._timeout(what, deadline)
            if poller.poll(max(1, int((limit - now) * 1000) + 1)):
                return

    def _timeout(self, what: str, call_deadline: float) -> None:
        seconds = self.limits.import_seconds if self.stage in ("setup", "import") else self.limits.call_seconds
        self.log.timed_out_after = time.monotonic() - (call_deadline - seconds)
        if call_deadline <= self._deadline_total:
            reason = f"{what} did not finish within {seconds:g} s (wall-clock limit); the process was killed"
        else:
            reason = f"the {self.role} session ran past its total limit of {self.limits.total_seconds:g} s; the process was killed"
        self._kill(reason)
        raise CandidateError(self._blame, reason)

    def _read_exact(self, n: int, what: str, deadline: float) -> memoryview:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            self._wait_fd(self._resp_r, select.POLLIN, what, deadline)
            k = os.readv(self._resp_r, [view[got:]])
            if k == 0:
                self._died(what)
            got += k
        return view

    def _recv(
        self,
        deadline: float,
        what: str,
        *,
        expect: bytes,
        max_len: int,
        total_budget: tuple[int, int] | None = None,
    ) -> tuple[bytes, memoryview]:
        """One message, its length checked against its kind's cap before the body is read.

        ``expect`` may be up to ``max_len`` bytes (and, for a payload, no more
        than the bitstream's bytes left); a failure report ``X`` up to
        :data:`MAX_REASON_BYTES`; anything else, or a longer report, is a
        forgery (the candidate wrote to the protocol pipe): a candidate failure,
        decided from the header alone. During set-up, an ``S`` report is read too.
        """
        kind, length = HEADER.unpack(self._read_exact(HEADER.size, what, deadline))
        if self.stage == "setup" and kind == b"S" and length <= MAX_REASON_BYTES:
            return kind, self._read_exact(length, what, deadline)
        if kind == expect:
            if total_budget is not None and length > total_budget[0]:
                reason = (
                    f"{what} returned {length} bytes, which takes the bitstream past its total cap of "
                    f"{total_budget[1]} bytes ({self.limits.max_bitstream_ratio:g} x the raw frames' size + "
                    f"{self.limits.max_bitstream_extra_bytes} bytes)"
                )
                self._kill(reason)
                raise CandidateError(self._blame, reason)
            if length > max_len:
                reason = f"{what} produced a {length}-byte message; the cap is {max_len}"
                self._kill(reason)
                raise CandidateError(self._blame, reason)
            return kind, self._read_exact(length, what, deadline)
        if kind != b"X" or length > MAX_REASON_BYTES:
            # Not what was asked, or a failure report longer than the harness ever
            # sends: a forgery. Nothing of it is read.
            what_kind = "failure report" if kind == b"X" else f"unexpected {kind!r} message"
            reason = f"{what} was answered by a {length}-byte {what_kind}; the harness was tampered with"
            self._kill(reason)
            raise CandidateError(self._blame, reason)
        return kind, self._read_exact(length, what, deadline)

    def _fail_from_message(self, kind: bytes, body) -> None:
        """Turn a reply that is not the expected one into an exception; never returns.

        Only during set-up, before any candidate code ran, can a message make
        this an :class:`IsolationError` (the system's voice). Everything after is
        the candidate's: a :class:`CandidateError` with a capped reason.
        """
        text = _cap_reason(bytes(body).decode("utf-8", "replace"))
        if self.stage == "setup":
            self._kill()
            if kind == b"S":
                raise IsolationError("the sandbox could not be set up: " + text)
            raise IsolationError(f"the sandbox's harness answered {kind!r} instead of its set-up report")
        if kind == b"X":
            if self.stage == "import":
                text = f"importing the candidate failed: {text}"
            raise CandidateError(self._blame, text)
        reason = f"the sandboxed process sent an unexpected message ({kind!r}); the harness was tampered with"
        self._kill(reason)
        raise CandidateError(self._blame, reason)

    def abort(self, reason: str) -> None:
        """Kill the process from any thread; the call in flight raises :class:`AbortedError`."""
        self._aborted = True
        self._kill(reason)

    def _died(self, what: str) -> None:
        """The process closed its pipes: say why, from how it ended."""
        assert self.proc is not None
        code = self._wait(2.0)
        if self._killed_for:
            raise (AbortedError if self._aborted else CandidateError)(self._blame, self._killed_for)
        if code is None:
            reason = f"the sandboxed process closed its pipes while {what}"
            self._kill(reason)
        elif code < 0 or (code > 128 and self.mode != "unsandboxed"):
            # bwrap's init exits with 128 + N when the sandboxed process died of signal N.
            sig = -code if code < 0 else code - 128
            extra = " (CPU time limit)" if sig == signal.SIGXCPU else ""
            reason = f"the process was killed by {_signal_name(sig)}{extra} while {what}"
        else:
            reason = f"the process exited with status {code} while {what}"
        if self._cgroup is not None and self._cgroup.oom_killed():
            reason += f" (the session's memory limit of {self.limits.memory_bytes} bytes was reached)"
        tail = self._stderr_tail()
        if tail and self.mode != "strict" or (tail and "bwrap:" in tail):
            reason += f"; stderr: {tail}"
        raise CandidateError(self._blame, _cap_reason(reason))

    def _stderr_tail(self) -> str:
        for t in self._drains:
            t.join(timeout=1.0)
        text = self.log.stderr.decode("utf-8", "replace").strip().splitlines()
        return text[-1][:300] if text else ""

    def _descendants(self, pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            try:
                for task in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{task}/children") as fh:
                        kids = [int(k) for k in fh.read().split()]
                    out.extend(kids)
                    todo.extend(kids)
            except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
                continue
        return out

    def _kill(self, reason: str | None = None) -> None:
        with self._lock:
            if reason and self._killed_for is None:
                self._killed_for = reason
            if self.proc is None or self.proc.returncode is not None:
                return
            # The sandboxed child is in its own session (bwrap --new-session), so
            # the process group holds only bwrap: kill the whole tree by pid too.
            # Killing the pid namespace's init ends every process inside it.
            victims = self._descendants(self.proc.pid)
            if self._cgroup is not None:
                victims += self._cgroup.pids()
            if isinstance(self.proc, _ForkedProc):
                # Through its pidfd: never a recycled pid. Its cgroup's pids follow.
                try:
                    signal.pidfd_send_signal(self.proc.pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _wait(self, timeout: float) -> int | None:
        """Reap the process with ``wait4`` (for its rusage); None if still running."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is not None:
            return proc.returncode
        deadline = time.monotonic() + timeout
        if isinstance(proc, _ForkedProc):
            # Not this worker's child: the template reaps it and reports its status.
            while not proc.exited():
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.002)
            status = proc.template.exit_status(proc.ns_pid, max(0.5, deadline - time.monotonic()))
            if status is None:  # the template is gone and took the status with it
                proc.returncode = -signal.SIGKILL if self._killed_for else 255
            else:
                proc.returncode = os.waitstatus_to_exitcode(status)
            self.log.returncode = proc.returncode
            return proc.returncode
        while True:
            try:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:
                return proc.returncode
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                # Not ru_maxrss: the child was forked from this worker, so its
                # figure starts at the worker's size. Peak memory comes from the
                # session cgroup in close().
                self.log.returncode = proc.returncode
                return proc.returncode
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)

    def close(self) -> None:
        for fd in (self._req_w, self._resp_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._req_w = self._resp_r = -1
        if self.proc is not None:
            # After a clean finish the harness exits by itself (and wait4 then gives
            # its peak memory); after any failure nothing it does is waited for.
            if not self._finished or self._wait(2.0) is None:
                self._kill()
                self._wait(5.0)
            for t in self._drains:
                t.join(timeout=2.0)
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            if isinstance(self.proc, _ForkedProc) and self.proc.pidfd >= 0:
                os.close(self.proc.pidfd)
                self.proc.pidfd = -1
        if self._cgroup is not None:
            # Prove the session is over: kill whatever is left in its cgroup, check
            # that it is empty, then read its peak memory and remove it.
            self.log.session_empty = self._cgroup.kill()
            self.log.peak_rss_bytes = self._cgroup.peak_memory()
            if isinstance(self.proc, _ForkedProc) and self.log.peak_rss_bytes is not None:
                # A forked session's cgroup is charged only for what it adds; the pages
                # it shares with the template are charged to the template's cgroup.
                # Count the interpreter and numpy as a cold session's figure does (a
                # torch candidate's shared torch pages are not counted).
                self.log.peak_rss_bytes += self.proc.template.base_rss
            if self.log.session_empty:
                self._cgroup.remove()
            self._cgroup = None
        if self._slot is not None:
            self._slot.close()
            self._slot = None
        if getattr(self, "_workdir", None):
            shutil.rmtree(self._workdir, ignore_errors=True)
