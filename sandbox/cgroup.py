"""One cgroup per sandbox session: memory (shared memory included), pids, CPU.

The kernel charges every page a session's processes bring in to the session's
memory cgroup: anonymous memory, thread stacks, tmpfs and ``memfd`` pages
(shmem), page cache it reads first. So unlike ``RLIMIT_AS`` or RSS, the limit
counts what a candidate hides in a memfd, and it works on GPU workers, where
CUDA's huge virtual reservations make ``RLIMIT_AS`` unusable. ``pids.max``
bounds processes *and threads*; the CPU controller caps cores.

Two layouts are supported:

* **cgroup v2** (``/sys/fs/cgroup/cgroup.controllers`` exists): the session
  cgroups are children of this process's own cgroup, which systemd delegates to
  the worker (``Delegate=yes`` in ``deploy/*.service``). v2 forbids processes
  in a cgroup that has children with controllers enabled, so on first use the
  worker's own processes move into a leaf ``worker`` child.
* **cgroup v1**: one directory per controller (``memory``, ``pids``, ``cpu``
  where mounted and writable), under this process's own cgroup in each
  hierarchy. ``memory.memsw`` is capped too where present (no swapping out of
  the limit).

The sandbox's first process is moved into every hierarchy by the worker
(:meth:`SessionCgroup.join`) while it is held at a start gate, before it
executes bubblewrap (see :mod:`sandbox.runner`), so nothing the sandbox starts
is ever outside it, and a failure to join is reported in the worker with its
errno and the cgroup it concerns. At the end :meth:`kill` kills
everything in it (``cgroup.kill`` on v2; SIGKILL to each pid, repeated, on v1:
the seccomp filter allows no ``fork``, so the set only shrinks), checks that it
is empty and removes it. Peak memory comes from the cgroup
(``memory.peak`` / ``memory.max_usage_in_bytes``), not from ``wait4`` of a
process forked from the worker.

Each session cgroup is named ``cf-<creator pid>-<hex>``; :func:`sweep_stale`
kills and removes those whose creating worker is gone (a worker that died
without cleaning up) and that are older than any session may run.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu")
_PREFIX = "cf-"
_CPU_PERIOD_US = 100_000
#: a session cgroup whose creator is gone is swept only once it is this old
#: (longer than any session may run), in case the creator lives in another pid namespace
STALE_AFTER_SECONDS = 3 * 3600


class CgroupError(OSError):
    """No session cgroup can be had here (not mounted, not writable, controller missing)."""


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str | int) -> None:
    with open(path, "w") as fh:
        fh.write(str(value))


def _own_paths() -> dict[str, str]:
    """This process's cgroup per hierarchy: ``{"": path}`` for v2, ``{controller: path}`` for v1."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                out[name] = path
    return out


def _why_join_failed(controller: str, pid: int, exc: OSError) -> str:
    """What the kernel's errno means here, with a hint where it alone does not say why."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EINVAL and controller in ("cpu", ""):
        try:
            policy = os.sched_getscheduler(pid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
        except OSError:
            policy = None
        if policy in (os.SCHED_FIFO, os.SCHED_RR):
            text += (
                " (the process has a real-time scheduling policy, and a cpu cgroup without a real-time"
                " budget (cpu.rt_runtime_us = 0) refuses real-time tasks)"
            )
    elif exc.errno == errno.ESRCH:
        text += " (the process is gone)"
    return text


def is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


@dataclass
class _Layout:
    version: int
    #: where session cgroups are made: one dir (v2) or one per controller (v1)
    parents: dict[str, Path]


_layout_cache: _Layout | None = None


def _v2_parent() -> Path:
    own = CGROUP_ROOT / _own_paths().get("", "/").lstrip("/")
    wanted = {"memory", "pids", "cpu"}
    available = set(_read(own / "cgroup.controllers").split())
    missing = {"memory", "pids"} - available
    if missing:
        raise CgroupError(f"cgroup v2: controllers {sorted(missing)} are not delegated to {own} (set Delegate=yes)")
    enabled = set(_read(own / "cgroup.subtree_control").split())
    if not wanted & available <= enabled:
        # No internal processes: move this worker's processes into a leaf first.
        leaf = own / "worker"
        leaf.mkdir(exist_ok=True)
        for pid in _read(own / "cgroup.procs").split():
            try:
                _write(leaf / "cgroup.procs", pid)
            except OSError:
                pass  # exited meanwhile
        _write(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted & available)))
    return own


def _v1_parents() -> dict[str, Path]:
    own = _own_paths()
    parents = {}
    for controller in V1_CONTROLLERS:
        root = CGROUP_ROOT / controller
        if not (root / "cgroup.procs").exists():
            if controller == "cpu":
                continue  # a CPU ceiling is best effort on v1; memory and pids are not
            raise CgroupError(f"cgroup v1 controller {controller!r} is not mounted at {root}")
        parents[controller] = root / own.get(controller, "/").lstrip("/")
    return parents


def layout() -> _Layout:
    """Where session cgroups go; raises :class:`CgroupError` when there is nowhere."""
    global _layout_cache
    if _layout_cache is None:
        try:
            if is_v2():
                _layout_cache = _Layout(2, {"": _v2_parent()})
            else:
                _layout_cache = _Layout(1, _v1_parents())
        except OSError as exc:
            raise CgroupError(f"no session cgroup available: {exc}") from exc
    return _layout_cache


class SessionCgroup:
    """The cgroup(s) of one sandbox session."""

    def __init__(self, memory_bytes: int, max_pids: int, cpu_cores: float | None, *, tag: str = ""):
        lay = layout()
        self.version = lay.version
        # ``tag``: a template's cgroup is ``cf-<pid>.template-<hex>``, not a session's
        self.name = f"{_PREFIX}{os.getpid()}{'.' + tag if tag else ''}-{uuid.uuid4().hex[:12]}"
        self.dirs: dict[str, Path] = {}
        self.memory_bytes = memory_bytes
        try:
            for controller, parent in lay.parents.items():
                d = parent / self.name
                d.mkdir()
                self.dirs[controller] = d
            if self.version == 2:
                d = self.dirs[""]
                _write(d / "memory.max", memory_bytes)
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", 0)
                _write(d / "pids.max", max_pids)
                if cpu_cores and (d / "cpu.max").exists():
                    _write(d / "cpu.max", f"{int(cpu_cores * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
            else:
                mem = self.dirs["memory"]
                _write(mem / "memory.limit_in_bytes", memory_bytes)
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    _write(mem / "memory.memsw.limit_in_bytes", memory_bytes)
                _write(self.dirs["pids"] / "pids.max", max_pids)
                if cpu_cores and "cpu" in self.dirs:
                    _write(self.dirs["cpu"] / "cpu.cfs_period_us", _CPU_PERIOD_US)
                    _write(self.dirs["cpu"] / "cpu.cfs_quota_us", int(cpu_cores * _CPU_PERIOD_US))
        except OSError as exc:
            self.remove()
            raise CgroupError(f"cannot set up the session cgroup {self.name}: {exc}") from exc

    # ------------------------------------------------------------ joining

    def join(self, pid: int) -> None:
        """Move process ``pid`` into every hierarchy of the session, then check it is there.

        Done by the worker, not by the child: the runner starts the sandbox
        process held at a gate (it runs nothing of its own until released), calls
        this, and releases it only once it returned. Raises :class:`CgroupError`
        whose message names the step, the cgroup and the errno.
        """
        for controller, d in self.dirs.items():
            procs = d / "cgroup.procs"
            try:
                _write(procs, pid)
            except OSError as exc:
                raise CgroupError(
                    exc.errno, f"moving process {pid} into {procs} failed: {_why_join_failed(controller, pid, exc)}"
                ) from exc
        for d in self.dirs.values():
            procs = d / "cgroup.procs"
            try:
                members = _read(procs).split()
            except OSError as exc:
                raise CgroupError(
                    exc.errno, f"reading {procs} to check that process {pid} joined failed: {exc.strerror}"
                ) from exc
            if str(pid) not in members:
                raise CgroupError(f"process {pid} is not in {procs} after it was moved there")

    # ------------------------------------------------------------ reading

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            try:
                found.update(int(p) for p in _read(d / "cgroup.procs").split())
            except OSError:
                pass
        return sorted(found)

    def _mem_dir(self) -> Path:
        return self.dirs["" if self.version == 2 else "memory"]

    def peak_memory(self) -> int | None:
        """The session's peak memory charge in bytes (None if the kernel does not say)."""
        names = ("memory.peak",) if self.version == 2 else ("memory.max_usage_in_bytes",)
        for name in names:
            try:
                return int(_read(self._mem_dir() / name))
            except (OSError, ValueError):
                continue
        return None

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed something here (the memory limit was hit)."""
        try:
            if self.version == 2:
                text = _read(self._mem_dir() / "memory.events")
            else:
                text = _read(self._mem_dir() / "memory.oom_control")
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        if self.version == 1:
            try:
                return int(_read(self._mem_dir() / "memory.failcnt")) > 0 and self.peak_memory() is not None and (
                    self.peak_memory() >= self.memory_bytes
                )
            except (OSError, ValueError):
                return False
        return False

    # ------------------------------------------------------------ the end

    def kill(self, timeout: float = 5.0) -> bool:
        """Kill everything in the session; True once every hierarchy is empty."""
        deadline = time.monotonic() + timeout
        if self.version == 2:
            try:
                _write(self.dirs[""] / "cgroup.kill", 1)
            except OSError:
                pass  # older kernels: fall back to signalling each pid below
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() >= deadline:
                return not self.pids()
            time.sleep(0.002)

    def remove(self) -> None:
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last task is being reaped
                    time.sleep(0.005)
        self.dirs = {k: v for k, v in self.dirs.items() if v.exists()}


def available() -> tuple[bool, str]:
    """Whether session cgroups can be made here, and if not why (for the isolation probe)."""
    try:
        cg = SessionCgroup(64 << 20, 16, 1.0)
    except CgroupError as exc:
        return False, str(exc)
    cg.remove()
    if cg.dirs:
        return False, "a test session cgroup could not be removed"
    return True, f"cgroup v{cg.version}"


def sweep_stale() -> int:
    """Kill and remove session cgroups whose creating worker process is gone; returns how many."""
    try:
        lay = layout()
    except CgroupError:
        return 0
    removed = 0
    for parent in lay.parents.values():
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for d in entries:
            name = d.name
            if not (name.startswith(_PREFIX) and d.is_dir()):
                continue
            try:
                creator = int(name.split("-")[1].split(".")[0])
            except (IndexError, ValueError):
                continue
            if creator == os.getpid() or os.path.exists(f"/proc/{creator}"):
                continue
            try:  # a worker in another pid namespace looks dead from here: only old ones go
                if time.time() - d.stat().st_ctime < STALE_AFTER_SECONDS:
                    continue
            except OSError:
                continue
            stale = SessionCgroup.__new__(SessionCgroup)
            stale.version, stale.name = lay.version, name
            stale.dirs = {k: p / name for k, p in lay.parents.items() if (p / name).exists()}
            stale.memory_bytes = 0
            stale.kill(1.0)
            stale.remove()
            removed += 1
    return removed
