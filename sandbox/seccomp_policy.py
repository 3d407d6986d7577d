"""The seccomp denylist loaded into every sandboxed candidate process.

A denylist over an ALLOW default, because numpy, torch, CUDA and the Python
runtime use a large and version-dependent set of syscalls that an allowlist
would have to chase. What is denied is what turns code into *more* than one
process, reaches outside the sandbox, or changes the kernel's view of the
process: new processes and programs, sockets, tracing other processes,
namespaces and mounts, kernel keyrings, BPF, perf, io_uring (a second syscall
path that seccomp does not see), userfaultfd, and setting the clock.

Threads stay allowed (``clone`` with ``CLONE_THREAD``), since BLAS and torch
use thread pools. ``clone3`` answers ENOSYS, so glibc falls back to ``clone``,
whose flags seccomp can inspect (``clone3`` passes them in memory it cannot read).

Page-cache probes are denied too, so that an encoder cannot leave bits in the
host's page cache for a later decoder to read (issue 12, finding 2): ``mincore``
and ``cachestat`` (ask which pages are resident), ``fadvise64`` and
``readahead`` (evict or load pages on purpose), ``madvise`` with ``MADV_COLD``
or ``MADV_PAGEOUT`` (evict file pages mapped only here), ``preadv2`` and
``pwritev2`` with ``RWF_NOWAIT`` (a read that fails instead of waiting for the
disk is a residency probe). What remains is timing a read, see
``deploy/README.md``.

Denied calls fail with an errno rather than killing the process, so the
candidate sees a Python exception and the reason that reaches the LLM says
which call was refused. Syscalls of a foreign ABI (``int 0x80``, x32 numbers
``nr | 0x40000000``) kill the whole *process* at once (``SECCOMP_RET_KILL_PROCESS``):
killing only the calling thread, libseccomp's default, left the harness hung
until the per-call timeout.

Two programs are built (:func:`compile_bpf`):

* ``outer``: everything above except ``execve``/``execveat``. bubblewrap loads
  it (``--seccomp FD``) in the sandbox's only process (``--as-pid-1``: there is
  no separate init) just before it executes the interpreter, so nothing in the
  sandbox ever runs unfiltered;
* ``inner``: ``execve``/``execveat`` only. The harness stacks it on top before
  it imports the candidate (the interpreter had to be executed first).

A third, ``template``, is ``outer`` less :data:`TEMPLATE_ALLOWED`, for the
template process sessions are forked from; a forked session stacks ``outer``
and ``inner`` on it (filters only ever add up), so it ends up under the same
denials as a cold one.
"""

from __future__ import annotations

import errno
import tempfile
from functools import lru_cache

CLONE_THREAD = 0x00010000

DENIED_SYSCALLS: tuple[str, ...] = (
    # new processes and programs
    "fork", "vfork", "execve", "execveat",
    # network and local sockets
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open",
    "pidfd_getfd", "pidfd_send_signal",
    # namespaces, mounts, root
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree",
    "mount_setattr",
    # kernel facilities with a history of escapes or a side channel for syscalls
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
    "personality", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "syslog", "acct",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "lookup_dcookie",
    "iopl", "ioperm", "vhangup",
    # the clock
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    # page-cache residency probes and evictions (an encoder-to-decoder channel)
    "mincore", "cachestat", "fadvise64", "readahead",
)

#: Denied last, by the ``inner`` program: bubblewrap must still execute the interpreter.
EXEC_SYSCALLS: tuple[str, ...] = ("execve", "execveat")

#: syscall numbers libseccomp may not know yet (x86_64 / aarch64 share these)
_BY_NUMBER = {"cachestat": 451}

MADV_COLD, MADV_PAGEOUT = 20, 21
RWF_NOWAIT = 0x00000008
#: (syscall, index of its ``flags`` argument) for RWF_NOWAIT
_RWF_CALLS = (("preadv2", 5), ("pwritev2", 5))


#: Without these the sandbox is not what it claims: the harness refuses to run
#: the candidate if any of them cannot be added to the filter.
REQUIRED: frozenset[str] = frozenset({
    "fork", "vfork", "execve", "execveat", "clone3", "socket", "socketpair", "ptrace",
    "process_vm_readv", "process_vm_writev", "io_uring_setup", "unshare", "setns", "mount",
    "mincore", "fadvise64", "readahead",
})


#: What the template (:mod:`sandbox.runner`, the zygote) may do that a session may
#: not: fork (``clone`` without ``CLONE_THREAD``), make the session's namespaces and
#: mount its fresh ``/proc`` and tmpfs, and receive the session's descriptors on its
#: control socket. Each session stacks the whole ``outer`` program on top before
#: anything of the candidate's loads, so a session can do none of these.
TEMPLATE_ALLOWED: frozenset[str] = frozenset({"fork", "vfork", "unshare", "mount", "recvmsg"})


def policy() -> dict:
    """The policy as plain JSON: names with their errno values."""
    deny = [[name, errno.EPERM] for name in DENIED_SYSCALLS]
    deny.append(["clone3", errno.ENOSYS])
    return {
        "deny": deny,
        "exec": [[name, errno.EPERM] for name in EXEC_SYSCALLS],
        "required": sorted(REQUIRED),
        "clone_thread_flag": CLONE_THREAD,
        "clone_errno": errno.EPERM,
    }


def _new_filter(seccomp):
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    # A foreign-ABI call (i386 int 0x80, x32) ends the process at once, not just the thread.
    flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    return flt


def _deny(seccomp, flt, name: str, errno_value: int, required: set[str]) -> None:
    try:
        flt.add_rule(seccomp.ERRNO(errno_value), name)
    except (RuntimeError, ValueError, OSError) as exc:
        number = _BY_NUMBER.get(name)
        if number is not None:
            try:
                flt.add_rule(seccomp.ERRNO(errno_value), number)
                return
            except (RuntimeError, ValueError, OSError):
                pass
        if name in required:
            raise RuntimeError(f"seccomp: cannot deny required syscall {name}: {exc}") from exc
        # otherwise a syscall this kernel or libseccomp does not know


def _export(flt) -> bytes:
    with tempfile.TemporaryFile() as fh:
        flt.export_bpf(fh)
        fh.seek(0)
        program = fh.read()
    if not program or len(program) % 8:
        raise RuntimeError(f"seccomp: libseccomp exported a malformed BPF program ({len(program)} bytes)")
    return program


@lru_cache(maxsize=4)
def compile_bpf(which: str = "outer") -> bytes:
    """One of the two programs (``"outer"`` or ``"inner"``, see the module docstring),
    compiled to classic BPF by libseccomp on the trusted side.

    The sandbox needs neither libseccomp nor ``ctypes.util.find_library`` (which
    spawns ``ldconfig``: about 100 ms of start-up per sandbox). Raises
    ``RuntimeError`` when a required syscall cannot be denied.
    """
    import pyseccomp as seccomp

    pol = policy()
    required = set(pol["required"])
    flt = _new_filter(seccomp)
    if which == "inner":
        for name, errno_value in pol["exec"]:
            _deny(seccomp, flt, name, errno_value, required)
        return _export(flt)
    if which not in ("outer", "template"):
        raise ValueError(f"unknown seccomp program {which!r}")
    skip = set(EXEC_SYSCALLS) | (TEMPLATE_ALLOWED if which == "template" else set())
    for name, errno_value in pol["deny"]:
        if name not in skip:
            _deny(seccomp, flt, name, errno_value, required - TEMPLATE_ALLOWED if which == "template" else required)
    if which == "outer":
        # clone() without CLONE_THREAD makes a process (fork); with it, a thread.
        flt.add_rule(
            seccomp.ERRNO(pol["clone_errno"]),
            "clone",
            seccomp.Arg(0, seccomp.MASKED_EQ, pol["clone_thread_flag"], 0),
        )
    for advice in (MADV_COLD, MADV_PAGEOUT):
        flt.add_rule(seccomp.ERRNO(errno.EPERM), "madvise", seccomp.Arg(2, seccomp.EQ, advice))
    for name, arg in _RWF_CALLS:
        flt.add_rule(seccomp.ERRNO(errno.EOPNOTSUPP), name, seccomp.Arg(arg, seccomp.MASKED_EQ, RWF_NOWAIT, RWF_NOWAIT))
    return _export(flt)
