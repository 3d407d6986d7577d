"""Faults on a real fleet: a killed worker, a restarted broker, a database outage, load.

Each test starts its own redis-server, database and workers, so stopping or
killing them disturbs nothing else.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest

from codecfleet import fleet as api
from fleet_harness import SLOW_CANDIDATE, PostgresCluster, wait_for

CLIP = "synthetic:mix@64x48"

#: SLOW_CANDIDATE with ``work`` square roots per encoded frame (about 1 s per 5 million
#: here). A candidate cannot read a clock (no ``time``), so the tests that need a long
#: queue check from the database that it really was long.
def busy_candidate(work: int) -> str:
    return SLOW_CANDIDATE.replace("_busy(1_500_000)", f"_busy({work})")


def _count(database_url: str, sql: str, *params) -> int:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        return conn.execute(sql, params).fetchone()[0]


def _measurements(database_url: str, experiment_id: int) -> int:
    return _count(
        database_url,
        "SELECT count(*) FROM measurements m JOIN artifacts a ON a.id = m.artifact_id WHERE a.experiment_id = %s",
        experiment_id,
    )


def _internal_errors(database_url: str) -> int:
    return _count(database_url, "SELECT count(*) FROM internal_errors")


def test_sigkill_of_the_gpu_worker_during_encode_then_restart_finishes_once(make_fleet):
    fleet = make_fleet(lease_seconds=4)
    fleet.worker("cpu,llm", beat=True)
    name = f"gpu-k-{os.getpid()}@127.0.0.1"
    gpu = fleet.worker("gpu", name=name)
    handle = api.submit(SLOW_CANDIDATE, CLIP, frames=3, rate_points=[0.3, 0.7])
    wait_for(lambda: handle.status().status == "encoding", 60, "encoding to start")

    gpu.kill()
    fleet.workers.remove(gpu)
    fleet.worker("gpu", name=name)  # the same node restarted, as systemd would
    # The killed worker's message is redelivered to the restarted node *and* the reaper
    # re-queues once the lease runs out; whichever comes first does the work, once.
    result = handle.wait(timeout=60 + 3 * fleet.heal_seconds())

    assert result["status"] == "succeeded", result
    assert result["attempts"] in (0, 1), result
    assert _measurements(fleet.database_url, handle.id) == 2
    assert all(f"/attempt-{result['attempts']}/" in rp["bitstream"] for rp in result["rate_points"])
    assert _internal_errors(fleet.database_url) == 0


def test_a_backlog_many_leases_long_on_one_gpu_worker_all_succeed_first_time(make_fleet):
    """Waiting is not running: experiments queued for many leases keep their first attempt.
    The gpu worker starts only after every experiment has waited in the gpu queue for
    more than four leases with the reaper running every second; then one worker works
    through the queue, so the last ones wait longer still."""
    fleet = make_fleet(lease_seconds=3, heartbeat_seconds=1)
    fleet.worker("cpu,llm", beat=True)
    jobs = [{"candidate": busy_candidate(2_000_000), "clip": f"{CLIP},seed={100 + i}"} for i in range(8)]
    handles = api.submit_many(jobs, frames=1, rate_points=[0.3, 0.7])
    wait_for(lambda: all(h.status().waiting_for == "encode_decode" for h in handles), 60, "every sanitize to finish")
    waited_from = time.monotonic()
    time.sleep(4 * fleet.setting("lease_seconds") + 2 * fleet.setting("reap_interval_seconds"))
    assert all(h.status().status == "sanitizing" and h.status().attempts == 0 for h in handles)

    fleet.worker("gpu")
    results = [h.wait(timeout=120 + 8 * (10 + fleet.heal_seconds())) for h in handles]

    assert [r["status"] for r in results] == ["succeeded"] * 8, [(r["status"], r.get("reason")) for r in results]
    assert [r["attempts"] for r in results] == [0] * 8
    shortest_wait = _count(
        fleet.database_url,
        "SELECT CAST(floor(min(extract(epoch FROM encode_started_at - sanitize_started_at))) AS int) FROM experiments",
    )
    assert shortest_wait >= 4 * fleet.setting("lease_seconds"), shortest_wait  # every one waited 4+ leases
    assert time.monotonic() - waited_from > 4 * fleet.setting("lease_seconds")
    assert _internal_errors(fleet.database_url) == 0


def test_a_stalled_but_alive_worker_loses_its_experiment_cleanly_and_it_finishes_once(make_fleet):
    """The reaper against a slow worker whose heartbeat comes late: SIGSTOP the gpu worker
    past its lease. The reaper re-queues and attempt 2 is measured (by the other gpu
    worker, or by the resumed one); the stalled attempt's renewal fails, it stops and
    records nothing."""
    fleet = make_fleet(lease_seconds=3, heartbeat_seconds=1)
    fleet.worker("cpu,llm", beat=True)
    gpus = [fleet.worker("gpu"), fleet.worker("gpu")]
    handle = api.submit(busy_candidate(5_000_000), CLIP + ",seed=31", frames=3, rate_points=[0.3, 0.7])
    holder = wait_for(lambda: (s := handle.status()).status == "encoding" and s.worker, 60, "encoding to start")
    first = next(w for w in gpus if holder.startswith(w.name + "["))

    os.killpg(first.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: handle.status().attempts == 1, 30 + 2 * fleet.heal_seconds(), "the reaper to re-queue")
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    result = handle.wait(timeout=60 + 3 * fleet.heal_seconds())
    time.sleep(2 * fleet.setting("heartbeat_seconds") + 1)  # let the resumed worker notice

    assert result["status"] == "succeeded", result
    # Attempt 2 ran on whichever gpu worker took its message (the resumed one is a live
    # worker too); the stalled attempt 1 recorded nothing.
    assert result["attempts"] == 1, result
    assert all("/attempt-1/" in rp["bitstream"] for rp in result["rate_points"])
    assert _measurements(fleet.database_url, handle.id) == 2
    assert handle.result() == result  # the resumed worker changed nothing
    assert "no longer held" in first.log()
    assert _internal_errors(fleet.database_url) == 0


def test_redis_restarted_during_a_run_the_experiment_finishes(make_fleet):
    fleet = make_fleet(lease_seconds=30)
    fleet.worker("cpu,llm", beat=True)
    fleet.worker("gpu")
    handle = api.submit(SLOW_CANDIDATE, CLIP + ",seed=2", frames=3, rate_points=[0.3, 0.7])
    wait_for(lambda: handle.status().status == "encoding", 60, "encoding to start")

    fleet.redis.restart()
    result = handle.wait(timeout=120)

    assert result["status"] == "succeeded", result
    assert result["attempts"] == 0
    assert _measurements(fleet.database_url, handle.id) == 2


def test_postgres_unreachable_for_seconds_tasks_retry_then_finish(make_fleet, tmp_path):
    cluster = PostgresCluster(tmp_path)
    fleet = None
    try:
        cluster.start()
        from db import migrate

        migrate.upgrade(cluster.url)
        fleet = make_fleet(database_url=cluster.url, lease_seconds=30)
        fleet.worker("cpu,llm", beat=True)
        gpu = fleet.worker("gpu")
        handle = api.submit(SLOW_CANDIDATE, CLIP + ",seed=4", frames=3, rate_points=[0.3, 0.7])
        wait_for(lambda: handle.status().status == "encoding", 60, "encoding to start")

        cluster.stop()
        time.sleep(4)  # the outage itself: the database stays down this long on purpose
        cluster.start()
        result = wait_for(lambda: (r := handle.result())["status"] in api.FINISHED and r, 120, "the experiment to end")

        assert result["status"] == "succeeded", result
        assert _measurements(fleet.database_url, handle.id) == 2
        assert "retry" in gpu.log().lower() or "lease renewal failed" in gpu.log()
    finally:
        from db import engine

        engine.reset()
        if fleet is not None:
            fleet.close()
        cluster.destroy()


@pytest.mark.slow
def test_forty_experiments_over_two_gpu_workers_all_finish_none_twice(make_fleet):
    fleet = make_fleet(lease_seconds=30)
    fleet.worker("cpu,llm", beat=True, concurrency=2)
    fleet.worker("gpu")
    fleet.worker("gpu")
    jobs = [{"candidate": "reference:intra_dct", "clip": f"synthetic:mix@32x32,seed={i}"} for i in range(40)]

    handles = api.submit_many(jobs, frames=1, rate_points=[0.5])
    results = [h.wait(timeout=240) for h in handles]

    assert [r["status"] for r in results] == ["succeeded"] * 40
    assert _count(fleet.database_url, "SELECT count(*) FROM measurements") == 40
    assert _count(fleet.database_url, "SELECT count(DISTINCT experiment_id) FROM artifacts") == 40
    assert _count(fleet.database_url, "SELECT max(attempts) FROM experiments") == 0
    workers = {r["worker"].split("[")[0] for r in results}
    assert len(workers) == 2, workers  # both gpu workers took a share
