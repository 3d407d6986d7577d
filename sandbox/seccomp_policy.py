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

Denied calls fail with an errno rather than killing the process, so the
candidate sees a Python exception and the reason that reaches the LLM says
which call was refused. Syscalls of a foreign ABI (``int 0x80``) are killed by
libseccomp's bad-architecture default.
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
)


#: Without these the sandbox is not what it claims: the harness refuses to run
#: the candidate if any of them cannot be added to the filter.
REQUIRED: frozenset[str] = frozenset({
    "fork", "vfork", "execve", "execveat", "clone3", "socket", "socketpair", "ptrace",
    "process_vm_readv", "process_vm_writev", "io_uring_setup", "unshare", "setns", "mount",
})


def policy() -> dict:
    """The policy as plain JSON for the harness: names with their errno values."""
    deny = [[name, errno.EPERM] for name in DENIED_SYSCALLS]
    deny.append(["clone3", errno.ENOSYS])
    return {
        "deny": deny,
        "required": sorted(REQUIRED),
        "clone_thread_flag": CLONE_THREAD,
        "clone_errno": errno.EPERM,
    }


@lru_cache(maxsize=1)
def compile_bpf() -> bytes:
    """The policy compiled to a classic-BPF program by libseccomp, on the trusted side.

    The harness loads these bytes with one ``seccomp()`` system call, so the
    sandboxed process needs neither libseccomp nor ``ctypes.util.find_library``
    (which spawns ``ldconfig`` subprocesses: about 100 ms of start-up per
    sandbox). Raises ``RuntimeError`` when a required syscall cannot be denied.
    """
    import pyseccomp as seccomp

    pol = policy()
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    required = set(pol["required"])
    for name, errno_value in pol["deny"]:
        try:
            flt.add_rule(seccomp.ERRNO(errno_value), name)
        except (RuntimeError, ValueError, OSError) as exc:
            if name in required:
                raise RuntimeError(f"seccomp: cannot deny required syscall {name}: {exc}") from exc
            # otherwise a syscall this kernel or libseccomp does not know
    # clone() without CLONE_THREAD makes a process (fork); with it, a thread.
    flt.add_rule(
        seccomp.ERRNO(pol["clone_errno"]),
        "clone",
        seccomp.Arg(0, seccomp.MASKED_EQ, pol["clone_thread_flag"], 0),
    )
    with tempfile.TemporaryFile() as fh:
        flt.export_bpf(fh)
        fh.seek(0)
        program = fh.read()
    if not program or len(program) % 8:
        raise RuntimeError(f"seccomp: libseccomp exported a malformed BPF program ({len(program)} bytes)")
    return program
