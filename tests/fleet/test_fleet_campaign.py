"""The same campaign as on the embedded default, through Redis, Postgres and worker processes."""

from __future__ import annotations

import psycopg

from codecfleet.campaigns import campaign


def test_a_campaign_runs_through_the_fleet_workers(fleet):
    report = campaign(["synthetic:mix@64x48"], "offline", population=2, generations=1, name="through-the-fleet",
                      seeds=("intra_dct",), frames=2, wait_timeout=300)

    dsn = fleet.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT e.status, e.worker_host, c.generator FROM experiments e "
            "JOIN campaigns k ON k.id = e.campaign_id JOIN candidates c ON c.id = e.candidate_id "
            "WHERE k.name = %s ORDER BY e.id",
            ("through-the-fleet",),
        ).fetchall()
    assert [g.generation for g in report.generations] == [0, 1]
    assert len(rows) == 3 and rows[0][2] == "seed:intra_dct"
    assert all(status in ("succeeded", "duplicate_output") for status, _, _ in rows)
    assert rows[0][0] == "succeeded"
    # encoded, decoded and scored by the gpu worker process, not by this test process
    assert all(host and host.startswith("gpu0-") for _, host, _ in rows), rows
    assert report.generations[0].best_so_far is not None
