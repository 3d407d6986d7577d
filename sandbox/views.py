"""The decoder's file view: a private, memory-resident copy of the runtime it needs.

Why (issue 12, finding 2): page cache belongs to an inode. When the encoder's
and the decoder's sandboxes bind the same host files, an encoder can *load*
cold pages of a big read-only file (one page per 1-bit) and a later decoder can
time page faults on the same file: a channel outside the bitstream
(~800-1900 bits per frame measured). Denying ``mincore``/``fadvise``/
``readahead``/``cachestat`` removes eviction and direct probes, not the timing.

What: the decoder never sees an inode the encoder sees. It gets a *view*: a
copy, on tmpfs, of exactly the runtime a decoder needs, laid out under the
view's root at the same absolute paths as on the host (so the sandbox binds
``VIEW/usr`` at ``/usr``, ``VIEW/<prefix>`` at the interpreter prefix, and so on):

* the interpreter and its standard library (no ``test``, ``idlelib``,
  ``tkinter``, ``config-*`` static library or base ``site-packages``);
* the installed distributions a candidate may import (numpy, scipy, torch,
  typing_extensions) with their whole requirement closure, from their
  ``RECORD`` files (so ``numpy.libs`` and such come along);
* the shared libraries all of that links against (the ``DT_NEEDED`` closure of
  every ELF file, resolved through RPATH/RUNPATH, ``$ORIGIN`` and the system
  library directories), the NVIDIA driver libraries CUDA opens by name, the
  locale ``C.utf8`` and ``/etc/ld.so.cache``;
* the harness.

Two properties close the channel:

1. **no shared inode**: encoder sessions read host files, decoder sessions
   read the view; nothing an encoder does to its page cache (or dentry cache)
   is visible on the decoder's files;
2. **always resident**: tmpfs pages live in memory until the file is deleted
   (this host has no swap; with swap, only an idle page of a view can be swapped
   out, see ``deploy/README.md``), so there is no cold page for one decoder to
   warm and a later decoder to time: decoder-to-decoder (rate point to rate
   point) carries nothing either. tmpfs also keeps no negative dentries.

The view is built once per host and reused by every worker and session: it is
named by a key over the interpreter, the distributions' versions, the harness
and the size and mtime of every file chosen, so installing or upgrading a
package makes a new view. It is built in a temporary directory and renamed into
place (two workers racing build it twice, one wins). It lives under
``CODECFLEET_VIEW_DIR`` (default ``/dev/shm/codecfleet-views``), owned by the
worker, not writable by anyone else, and bound read-only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata as md
import json
import mmap
import os
import re
import shutil
import stat
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

#: What a candidate may import that lives in site-packages (sandbox.sanitize.ALLOWED_MODULES).
VIEW_DISTRIBUTIONS = ("numpy", "scipy", "torch", "typing_extensions")
#: Standard-library directories a codec has no use for (big, or GUI, or tests).
_STDLIB_SKIP = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3"}
_MARKER = "VIEW-COMPLETE.json"
_FORMAT = 2  # bumped when the way a view is built changes
_TMPFS_MAGIC = 0x01021994
_DRIVER_LIB = re.compile(r"^lib(cuda|nvidia-|nvcuvid|nvoptix)")


class ViewError(RuntimeError):
    """The decoder's file view could not be built or found intact."""


@dataclass(frozen=True)
class FileView:
    """A built view: ``root`` holds host paths re-rooted (``root + "/usr"`` is ``/usr``)."""

    root: str
    key: str
    n_files: int
    n_bytes: int
    resident: bool  # on tmpfs: every page in memory

    def source(self, host_path: str) -> str:
        """Where the view keeps ``host_path`` (an absolute, canonical host path)."""
        return self.root + host_path

    def intact(self) -> bool:
        return os.path.isfile(os.path.join(self.root, _MARKER))


def view_dir() -> Path:
    return Path(os.environ.get("CODECFLEET_VIEW_DIR", "/dev/shm/codecfleet-views"))


# --------------------------------------------------------------------------- ELF


def _elf_deps(path: str) -> tuple[list[str], list[str], str | None]:
    """``(needed, search_paths, interpreter)`` of an ELF64 little-endian file; empty if not ELF."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                return [], [], None
            fh.seek(0)
            size = os.fstat(fh.fileno()).st_size
            if size < 64:
                return [], [], None
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return [], [], None
    try:
        if data[4] != 2 or data[5] != 1:
            return [], [], None
        e_phoff = struct.unpack_from("<Q", data, 0x20)[0]
        e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
        loads, dynamic, interp = [], None, None
        for i in range(e_phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
            if p_type == 1:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == 2:
                dynamic = (p_offset, p_filesz)
            elif p_type == 3:
                interp = bytes(data[p_offset : p_offset + p_filesz]).rstrip(b"\0").decode()
        if dynamic is None:
            return [], [], interp
        entries = []
        for off in range(dynamic[0], dynamic[0] + dynamic[1] - 15, 16):
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == 0:
                break
            entries.append((tag, val))
        strtab = next((v for t, v in entries if t == 5), None)
        if strtab is None:
            return [], [], interp
        base = next((off + strtab - va for va, off, sz in loads if va <= strtab < va + sz), None)
        if base is None:
            return [], [], interp

        def string(offset: int) -> str:
            end = data.find(b"\0", base + offset)
            return bytes(data[base + offset : end]).decode("utf-8", "replace")

        needed = [string(v) for t, v in entries if t == 1]
        paths = []
        for t, v in entries:
            if t in (15, 29):  # DT_RPATH, DT_RUNPATH
                paths += [p for p in string(v).split(":") if p]
        return needed, paths, interp
    except (struct.error, IndexError, UnicodeDecodeError):
        return [], [], None
    finally:
        data.close()


def _system_lib_dirs() -> list[str]:
    dirs = []
    multiarch = getattr(sys.implementation, "_multiarch", None) or ""
    for d in (f"/lib/{multiarch}", f"/usr/lib/{multiarch}", "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
        if multiarch or not d.endswith("/"):
            dirs.append(d.rstrip("/"))
    conf = Path("/etc/ld.so.conf.d")
    if conf.is_dir():
        for f in sorted(conf.glob("*.conf")):
            try:
                for line in f.read_text().splitlines():
                    line = line.strip()
                    if line.startswith("/"):
                        dirs.append(line)
            except OSError:
                pass
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _canonical(path: str, resolved: dict[str, str] | None = None) -> str:
    """The path with its directory resolved (the file itself may stay a symlink).
    ``resolved`` memoises resolved directories over one plan (tens of thousands of files
    share a few thousand directories, and each ``realpath`` costs an ``lstat`` per
    component)."""
    head, tail = os.path.split(path)
    if resolved is None:
        return os.path.join(os.path.realpath(head), tail)
    real = resolved.get(head)
    if real is None:
        real = resolved[head] = os.path.realpath(head)
    return os.path.join(real, tail)


# --------------------------------------------------------------------------- choosing files


def _distribution_closure(names) -> list[md.Distribution]:
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in seen:
            continue
        seen[key] = dist
        for req in dist.requires or ():
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", req.strip())[0])
    return [seen[k] for k in sorted(seen)]


@dataclass
class _Plan:
    files: set[str]
    roots: list[str]  # host paths a session binds (besides /usr): prefix, sites, harness
    dists: list[tuple[str, str]]


def _plan(prefix: str, python: str, site_dirs: list[str], harness: str) -> _Plan:
    files: set[str] = set()
    resolved: dict[str, str] = {}  # directories resolved so far, for _canonical
    stdlib = os.path.join(prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    for root, dirs, names in os.walk(stdlib):
        rel = os.path.relpath(root, stdlib)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP and not d.startswith("config-")]
        for n in names:
            files.add(os.path.join(root, n))
    files.add(python)
    dists = _distribution_closure(VIEW_DISTRIBUTIONS)
    sites = [os.path.realpath(s) for s in site_dirs]
    for dist in dists:
        for f in dist.files or ():
            p = _canonical(os.path.normpath(str(dist.locate_file(f))), resolved)  # as the (resolved) sites
            if any(p.startswith(s + "/") for s in sites):
                files.add(p)  # if it exists: the closure below keeps only what does
    files.add(harness)
    if os.path.exists("/etc/ld.so.cache"):
        files.add("/etc/ld.so.cache")
    locale = "/usr/lib/locale/C.utf8"
    if os.path.isdir(locale):
        for root, _, names in os.walk(locale):
            files.update(os.path.join(root, n) for n in names)
    system = _system_lib_dirs()
    for d in system:
        try:
            for n in os.listdir(d):
                if _DRIVER_LIB.match(n):
                    files.add(os.path.join(d, n))
        except OSError:
            pass
    # The ELF closure, following symlinks to their targets.
    todo = [_canonical(f, resolved) for f in files]
    files = set()
    while todo:
        p = todo.pop()
        if p in files:
            continue
        try:
            mode = os.lstat(p).st_mode
        except OSError:
            continue
        files.add(p)
        if stat.S_ISLNK(mode):
            todo.append(_canonical(os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p))), resolved))
            continue
        if not (".so" in os.path.basename(p) or p == python):
            continue
        needed, paths, interp = _elf_deps(p)
        if interp:
            todo.append(_canonical(interp, resolved))
        origin = os.path.dirname(p)
        search = [q.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for q in paths]
        search += [os.path.join(prefix, "lib")] + system
        for name in needed:
            if "/" in name:
                todo.append(_canonical(name, resolved))
                continue
            for d in search:
                cand = os.path.join(d, name)
                if os.path.lexists(cand):
                    todo.append(_canonical(cand, resolved))
                    break
    # Only what a session can see: /usr (where /lib and /lib64 point), the prefix, the sites, the harness.
    allowed = ["/usr/", prefix + "/", *(s + "/" for s in sites)]
    files = {f for f in files if f.startswith(tuple(allowed)) or f in (harness, "/etc/ld.so.cache", python)}
    return _Plan(files, [prefix, *sites, harness], [(d.metadata["Name"], d.version) for d in dists])


def _key(plan: _Plan) -> str:
    h = hashlib.sha256()
    # The bind points too: two processes whose paths differ (a symlinked venv, another
    # checkout) must not share a view built for the other's layout.
    h.update(json.dumps([_FORMAT, sys.version, plan.dists, sorted(plan.roots)]).encode())
    for f in sorted(plan.files):
        try:
            st = os.lstat(f)
        except OSError:
            continue
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- building


def _is_tmpfs(path: str) -> bool:
    try:
        import ctypes

        class Statfs(ctypes.Structure):
            _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

        buf = Statfs()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.statfs(path.encode(), ctypes.byref(buf)) != 0:
            return False
        return (buf.f_type & 0xFFFFFFFF) == _TMPFS_MAGIC
    except OSError:
        return False


def _safe_existing(root: Path) -> bool:
    """A view found on disk is used only if this uid owns it and nobody else may write it."""
    try:
        st = root.lstat()
        marker = (root / _MARKER).lstat()
    except OSError:
        return False
    me = os.geteuid()
    return (
        st.st_uid == me and marker.st_uid == me and not (st.st_mode & 0o022) and os.path.isdir(root) and not root.is_symlink()
    )


def _copy(plan: _Plan, tmp: Path) -> tuple[int, int]:
    n = total = 0
    for f in sorted(plan.files):
        dest = str(tmp) + f
        os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
        if os.path.islink(f):
            os.symlink(os.readlink(f), dest)
        elif os.path.isfile(f):
            shutil.copyfile(f, dest)
            st = os.stat(f)
            os.chmod(dest, (st.st_mode & 0o755) | 0o444)
            # Same mtimes: a .pyc names its source's mtime, and a mismatch would
            # recompile every module at every start (-B: never written back).
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
            total += os.path.getsize(dest)
        else:
            continue
        n += 1
    # Directories: searchable by the sandbox user, writable by no one else.
    for root, dirs, _ in os.walk(tmp):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
    os.chmod(tmp, 0o755)
    return n, total


@functools.lru_cache(maxsize=4)
def _decoder_view_cached(prefix: str, python: str, sites: tuple[str, ...], harness: str) -> FileView:
    plan = _plan(prefix, python, list(sites), harness)
    key = _key(plan)
    base = view_dir()
    try:
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ViewError(f"cannot create the view directory {base}: {exc}") from exc
    root = base / key
    if not _safe_existing(root):
        if root.exists() or root.is_symlink():
            raise ViewError(f"{root} exists but is not a complete view owned by this uid and closed to others")
        tmp = base / f".build-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(mode=0o700)
        try:
            n, total = _copy(plan, tmp)
            (tmp / _MARKER).write_text(json.dumps({"key": key, "files": n, "bytes": total, "dists": plan.dists}))
            os.chmod(tmp / _MARKER, 0o444)
            try:
                os.rename(tmp, root)
            except OSError:
                if not _safe_existing(root):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another worker built it first
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise ViewError(f"building the decoder view under {base} failed: {exc}") from exc
            raise
    sweep_views(keep=key)  # views of other versions not used for a day
    info = json.loads((root / _MARKER).read_text())
    try:
        os.utime(root / _MARKER, follow_symlinks=False)  # last used, for sweep_views
    except OSError:
        pass
    return FileView(str(root), key, int(info["files"]), int(info["bytes"]), _is_tmpfs(str(root)))


def decoder_view(prefix: str, python: str, site_dirs: list[str], harness: str, *, refresh: bool = False) -> FileView:
    """The host's decoder view for this runtime, built if missing (seconds, once per host).

    Cached per process; a view that disappeared (swept, or the tmpfs was
    cleared) is rebuilt. ``refresh`` re-plans it (after a package change).
    """
    args = (prefix, python, tuple(site_dirs), harness)
    if refresh:
        _decoder_view_cached.cache_clear()
    view = _decoder_view_cached(*args)
    if not view.intact():
        _decoder_view_cached.cache_clear()
        view = _decoder_view_cached(*args)
    return view


def sweep_views(older_than_seconds: float = 86400.0, keep: str | None = None) -> list[str]:
    """Remove views (and abandoned builds) not used for a day; returns their names.

    A session that still binds a removed view keeps working (its mounts hold the files).
    """
    removed = []
    base = view_dir()
    if not base.is_dir():
        return removed
    now = time.time()
    for entry in base.iterdir():
        if entry.name == keep:
            continue
        try:
            marker = entry / _MARKER
            stamp = marker.stat().st_mtime if marker.exists() else entry.stat().st_mtime
            if entry.stat().st_uid != os.geteuid() or now - stamp < older_than_seconds:
                continue
        except OSError:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed
