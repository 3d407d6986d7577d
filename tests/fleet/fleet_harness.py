"""Real services for the fleet tests: redis-server, a throwaway Postgres cluster,
Celery workers and Flower as child processes of the test, stopped by their pid.

Nothing here touches a service the test did not start, except the machine's
Postgres at 127.0.0.1:5432, where each test session creates (and drops) its
own database.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def require(condition: bool, message: str) -> None:
    """Skip when a service is missing; under CI=true fail instead."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message + " -- CI must run the fleet tests", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a service may be down on purpose
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


class Process:
    """A child process in its own session, its output in a log file."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log_path: Path, cwd: Path = REPO):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float) -> None:
        regex = re.compile(pattern)
        wait_for(
            lambda: regex.search(self.log()) or (self.proc.poll() is not None and _died(self)),
            timeout,
            f"{pattern!r} in {self.log_path}",
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and everything in its session (its pool children)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self._log.close()

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM) without waiting; :meth:`stop` then waits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a Celery warm shutdown), then SIGKILL the session after ``timeout`` s."""
        if self.proc.poll() is None:
            if not getattr(self, "_terminated", False):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def _died(p: Process) -> bool:
    raise AssertionError(f"{p.argv[:6]} exited with {p.proc.returncode}; log:\n{p.log()[-4000:]}")


class RedisServer:
    """A redis-server of our own on a free loopback port, persisting with AOF."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("redis-server")
        require(self.binary is not None, "redis-server is not installed")
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
        ]
        self.process = Process(argv, env=dict(os.environ), log_path=self.dir / "redis.log")
        self.process.wait_log(r"Ready to accept connections", 20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class PostgresCluster:
    """A throwaway cluster (initdb + pg_ctl as the postgres OS user) on a free port."""

    def __init__(self, workdir: Path):
        bins = [d for d in PG_BIN_DIRS if (d / "initdb").exists()]
        require(bool(bins), "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = bins[0]
        self.port = free_port()
        # Postgres refuses to run as root; the data dir must belong to its user.
        self.root = Path(tempfile.mkdtemp(prefix="cf-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        self._as_postgres(["chown", "-R", "postgres:postgres", str(self.root)], as_root=True)
        os.chmod(self.root, 0o755)
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])

    def _as_postgres(self, argv: list[str], as_root: bool = False) -> None:
        if as_root or os.geteuid() != 0:
            cmd = argv
        else:
            cmd = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "pg.log"), "-w", "start"])

    def stop(self) -> None:
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def fleet_env(broker_url: str, database_url: str, workdir: Path, **overrides: Any) -> dict[str, str]:
    """The environment of every fleet process in a test: small leases so faults heal fast."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECFLEET_")}
    env.update(
        CODECFLEET_BROKER_URL=broker_url,
        CODECFLEET_DATABASE_URL=database_url,
        CODECFLEET_DATA_DIR=str(workdir / "data"),
        CODECFLEET_ARTIFACT_DIR=str(workdir / "artifacts"),
        CODECFLEET_CACHE_DIR=str(workdir / "cache"),
        CODECFLEET_DEVICE="cpu",
        CODECFLEET_LEASE_SECONDS="6",
        CODECFLEET_HEARTBEAT_SECONDS="1",
        CODECFLEET_REAP_INTERVAL_SECONDS="1",
        CODECFLEET_MAX_ATTEMPTS="3",
        PYTHONPATH=str(REPO),
        CODECFLEET_TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    env.update({f"CODECFLEET_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


_worker_counter = 0


def start_worker(env: dict[str, str], workdir: Path, queues: str, *, name: str | None = None, beat: bool = False,
                 concurrency: int = 1) -> Process:
    """``codecfleet worker`` (which execs celery) with a unique node name; returns once ready."""
    global _worker_counter
    _worker_counter += 1
    name = name or f"{queues.replace(',', '-')}{_worker_counter}-{os.getpid()}@127.0.0.1"
    argv = [PYTHON, "-m", "codecfleet.cli", "worker", "--queues", queues, "--name", name,
            "--concurrency", str(concurrency), "--max-tasks-per-child", "100", "--loglevel", "INFO"]
    if beat:
        argv.append("--beat")
    safe = re.sub(r"[^\w.-]", "_", name)
    worker = Process(argv, env=env, log_path=workdir / f"worker-{safe}.log")
    worker.name = name  # type: ignore[attr-defined]
    worker.wait_log(r"ready\.", 90)
    return worker


def use_settings(env: dict[str, str]) -> None:
    """Point this test process's settings, engine and Celery app at ``env``."""
    for key in [k for k in os.environ if k.startswith("CODECFLEET_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("CODECFLEET_")})
    from config import get_settings
    from db import engine
    from tasks.app import reconfigure

    get_settings.cache_clear()
    engine.reset()
    reconfigure()


SLOW_CANDIDATE = '''
import math
import zlib

import numpy as np


def _busy(seconds_of_work):
    total = 0.0
    for i in range(seconds_of_work):
        total += math.sqrt(i)
    return total


def compress_video_frame(frame, frame_index, config):
    _busy(1_500_000)
    step = 1 + int(round((1.0 - config["quality"]) * 31))
    q = (frame.astype(np.int16) // step).astype(np.uint8)
    return bytes([step]) + zlib.compress(q.tobytes(), 6)


def decompress_video_frame(compressed_data, frame_index, config):
    step = compressed_data[0]
    q = np.frombuffer(zlib.decompress(compressed_data[1:]), dtype=np.uint8)
    q = q.reshape(config["height"], config["width"], 3).astype(np.int16)
    return np.clip(q * step + step // 2, 0, 255).astype(np.uint8)
'''
