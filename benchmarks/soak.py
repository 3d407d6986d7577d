"""Soak: SIGKILL gpu workers at random moments while experiments run, and count what survives.

A real fleet on this machine: its own redis-server (AOF on), a fresh Postgres
database, a cpu worker with beat (the reaper) and ``--gpu-workers`` gpu
workers, every one a ``codecfleet worker`` process. ``--busy`` processes spin
to keep the cores loaded. ``--experiments`` small experiments (distinct
synthetic clips, so none reuses another's result) are submitted at once; a
killer thread SIGKILLs a random gpu worker (its whole process group: the
Celery parent, its pool child and any sandbox) every ``--kill-every`` seconds
on average, and restarts it under the same node name, as systemd would.

Afterwards every experiment is checked in the database:

* finished exactly once: ``succeeded``, one artifact and one measurement per
  rate point, all from a single attempt's directory;
* duplicates: more measurements or artifacts than rate points, or a
  ``duplicate_output`` (every clip is different, so there is none to find);
* lost: anything else (failed, timed out, or still unfinished at the deadline);
* internal errors: rows in ``internal_errors`` (bugs of codecfleet).

    .venv/bin/python benchmarks/soak.py [--experiments 50] [--gpu-workers 2] [--kill-every 10] [--busy 2]

Target: every experiment finished exactly once, 0 duplicates, 0 lost, 0 internal errors.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fleet"))

import psycopg  # noqa: E402

from fleet_harness import SLOW_CANDIDATE, RedisServer, fleet_env, start_worker, use_settings  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def _busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


class Killer(threading.Thread):
    """SIGKILLs a random gpu worker now and then and restarts it under its node name."""

    def __init__(self, workers: list, env: dict, workdir: Path, every: float, rng: random.Random):
        super().__init__(name="killer", daemon=True)
        self.workers, self.env, self.workdir, self.every, self.rng = workers, env, workdir, every, rng
        self.kills = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(0.3, 1.7) * self.every):
            index = self.rng.randrange(len(self.workers))
            victim = self.workers[index]
            victim.kill()
            self.kills += 1
            if self.stop.is_set():
                return
            self.workers[index] = start_worker(self.env, self.workdir, "gpu", name=victim.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--gpu-workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=10.0, help="mean seconds between two kills")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes loading the cores")
    parser.add_argument("--lease", type=float, default=4.0, help="CODECFLEET_LEASE_SECONDS of the fleet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if args.experiments < 1 or args.gpu_workers < 1:
        parser.error("need at least one experiment and one gpu worker")

    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="codecfleet-soak-"))
    database = f"cf_soak_{secrets.token_hex(5)}"
    redis = RedisServer(workdir)
    busy: list[subprocess.Popen] = []
    workers: list = []
    killer = None
    started = time.monotonic()
    try:
        redis.start()
        _admin(f'CREATE DATABASE "{database}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        from db import migrate

        migrate.upgrade(url)
        env = fleet_env(redis.url, url, workdir, lease_seconds=args.lease, heartbeat_seconds=1,
                        reap_interval_seconds=1, max_attempts=3)
        use_settings(env)
        busy = [_busy_loop() for _ in range(args.busy)]
        workers.append(start_worker(env, workdir, "cpu,llm", beat=True, concurrency=2))
        gpus = [start_worker(env, workdir, "gpu", name=f"soak-gpu{i}-{os.getpid()}@127.0.0.1")
                for i in range(args.gpu_workers)]

        from codecfleet import fleet

        candidate = SLOW_CANDIDATE.replace("_busy(1_500_000)", "_busy(600_000)")
        jobs = [{"candidate": candidate, "clip": f"synthetic:mix@48x32,seed={1000 + i}"} for i in range(args.experiments)]
        rate_points = [0.3, 0.7]
        handles = fleet.submit_many(jobs, frames=2, rate_points=rate_points)
        print(f"soak: {len(handles)} experiments submitted; {args.gpu_workers} gpu workers, a kill every "
              f"~{args.kill_every:g} s, {args.busy} busy loops, lease {args.lease:g} s", flush=True)
        killer = Killer(gpus, env, workdir, args.kill_every, rng)
        killer.start()

        deadline = time.monotonic() + args.timeout
        pending = {h.id: h for h in handles}
        while pending and time.monotonic() < deadline:
            for eid in [e for e, h in pending.items() if h.status().finished]:
                del pending[eid]
            time.sleep(1.0)
        killer.stop.set()
        killer.join(timeout=120)
        workers.extend(killer.workers)

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT e.id, e.status, e.attempts, "
                " (SELECT count(*) FROM artifacts a WHERE a.experiment_id = e.id), "
                " (SELECT count(*) FROM measurements m JOIN artifacts a ON a.id = m.artifact_id "
                "   WHERE a.experiment_id = e.id), "
                " (SELECT count(DISTINCT substring(a.path from '/attempt-[0-9]+/')) FROM artifacts a "
                "   WHERE a.experiment_id = e.id) "
                "FROM experiments e ORDER BY e.id"
            ).fetchall()
            internal = conn.execute("SELECT count(*) FROM internal_errors").fetchone()[0]
        n = len(rate_points)
        once = [r for r in rows if r[1] == "succeeded" and r[3] == n and r[4] == n and r[5] == 1]
        dupes = [r for r in rows if r[1] == "duplicate_output" or r[3] > n or r[4] > n]
        lost = [r for r in rows if r[1] != "succeeded" and r not in dupes]
        requeues = sum(r[2] for r in rows)
        elapsed = time.monotonic() - started

        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"soak: SIGKILL of gpu workers under load ({elapsed:.0f} s)")
        for col in ("experiments", "kills", "finished exactly once", "duplicates", "lost", "internal errors",
                    "re-queues (attempts spent)"):
            table.add_column(col, justify="right")
        table.add_row(str(len(rows)), str(killer.kills), f"{len(once)}/{len(rows)}", str(len(dupes)), str(len(lost)),
                      str(internal), str(requeues))
        Console(width=140).print(table)
        for r in lost + dupes:
            print(f"  experiment {r[0]}: {r[1]}, attempts {r[2]}, artifacts {r[3]}, measurements {r[4]}")
        ok = len(once) == len(rows) and not dupes and not lost and internal == 0
        print("target met: every experiment finished exactly once, none lost, no internal error" if ok
              else "TARGET MISSED", flush=True)
        return 0 if ok else 1
    finally:
        if killer is not None:
            killer.stop.set()
        for p in busy:
            p.kill()
        for w in workers:
            w.stop(timeout=10)
        redis.stop()
        from db import engine

        engine.reset()
        try:
            _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        except psycopg.Error:
            pass
        if os.environ.get("CODECFLEET_SOAK_KEEP") is None:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
