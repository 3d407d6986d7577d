"""Faults on a real fleet: a killed worker, a restarted broker, a database outage, load.

Each test starts its own redis-server, database and workers, so stopping or
killing them disturbs nothing else.
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from codecfleet import fleet as api
from fleet_harness import SLOW_CANDIDATE, PostgresCluster, wait_for

CLIP = "synthetic:mix@64x48"


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


def test_sigkill_of_the_gpu_worker_during_encode_then_restart_finishes_once(make_fleet):
    fleet = make_fleet(lease_seconds=4)
    fleet.worker("cpu,llm", beat=True)
    name = f"gpu-k-{os.getpid()}@127.0.0.1"
    gpu = fleet.worker("gpu", name=name)
    handle = api.submit(SLOW_CANDIDATE, CLIP, frames=3, rate_points=[0.3, 0.7])
    wait_for(lambda: handle.status().status == "encoding", 60, "encoding to start")

    gpu.kill()
    killed_at = time.monotonic()
    fleet.workers.remove(gpu)
    fleet.worker("gpu", name=name)  # the same node restarted, as systemd would
    result = handle.wait(timeout=120)

    assert result["status"] == "succeeded", result
    assert result["attempts"] == 1  # the reaper re-queued it once after the lease ran out
    assert _measurements(fleet.database_url, handle.id) == 2
    assert all("/attempt-1/" in rp["bitstream"] for rp in result["rate_points"])
    assert time.monotonic() - killed_at < 120


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
        from tasks import _db

        _db.reset()
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
