"""Results-database benchmark: the fleet's hot queries on a realistically full Postgres.

Creates a fresh database on the server, applies the migrations, seeds
``--experiments`` experiments (default 100,000) with their candidates, artifacts,
measurements (4 rate points each) and scores through COPY, runs ANALYZE, then
times the queries a fleet runs all the time: the leaderboard, top-K candidates
for a prompt, recent failures for a prompt, the reaper's expired leases and the
dedup lookup. Each is run through the ``db`` query modules exactly as the workers call it;
every SQL statement it sends is captured and shown with EXPLAIN ANALYZE so the
table can say which indexes it used. The database is dropped at the end.

    .venv/bin/python benchmarks/db.py [--experiments 100000] [--url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from db import experiments, hashing, migrate, rankings, results  # noqa: E402
from db.models import ExperimentStatus as S  # noqa: E402
from db.session import make_engine, session_factory  # noqa: E402

TARGET_MS = 50.0
N_CLIPS = 20
N_CAMPAIGNS = 5
RATE_POINTS = (0.2, 0.4, 0.6, 0.8)
CONFIG = {"device": "cuda", "width": 352, "height": 288, "fps": 30.0}
# Share of experiments in each final or current status (a fleet some weeks in).
STATUS_MIX = [
    (S.SUCCEEDED, 0.70),
    (S.FAILED, 0.12),
    (S.REJECTED, 0.05),
    (S.TIMED_OUT, 0.02),
    (S.DUPLICATE_OUTPUT, 0.02),
    (S.CANCELLED, 0.02),
    (S.ENCODING, 0.02),
    (S.SCORING, 0.01),
    (S.SANITIZING, 0.01),
    (S.QUEUED, 0.03),
]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def copy_rows(conn: psycopg.Connection, table: str, columns: list[str], rows: Any) -> int:
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def seed(dsn: str, n_experiments: int, now: datetime, rng: random.Random) -> dict[str, int]:
    counts: dict[str, int] = {}
    start = now - timedelta(days=30)
    config_json = json.dumps(CONFIG)
    config_hash = hashing.config_hash(CONFIG, RATE_POINTS)
    with psycopg.connect(dsn) as conn:
        counts["campaigns"] = copy_rows(
            conn, "campaigns", ["id", "name", "created_at"],
            ((i, f"campaign-{i}", start) for i in range(1, N_CAMPAIGNS + 1)),
        )
        counts["clips"] = copy_rows(
            conn, "clips", ["id", "sha256", "source", "width", "height", "n_frames", "fps", "created_at"],
            ((i, sha(f"clip{i}"), f"clips/clip{i}.y4m", 352, 288, 30, 30.0, start) for i in range(1, N_CLIPS + 1)),
        )
        n_candidates = n_experiments // 2  # each candidate tried on about two clips
        code = "import numpy as np\n\ndef compress_video(frames, config):\n    ...\n" * 4
        counts["candidates"] = copy_rows(
            conn, "candidates",
            ["id", "campaign_id", "code", "ast_hash", "generator", "model", "sanitizer_verdict", "created_at"],
            (
                (i, (i % N_CAMPAIGNS) + 1, f"# candidate {i}\n{code}", sha(f"ast{i}"), "openai", "model-x",
                 "accepted", start)
                for i in range(1, n_candidates + 1)
            ),
        )

        statuses, weights = zip(*STATUS_MIX, strict=True)
        plan = rng.choices(statuses, weights=weights, k=n_experiments)
        succeeded: list[int] = []
        experiment_rows = []
        for i, status in enumerate(plan, start=1):
            candidate = (i - 1) // 2 + 1
            queued = start + timedelta(seconds=i * 25)
            finished = queued + timedelta(seconds=60) if status in _TERMINAL else None
            lease = None
            if status in (S.ENCODING, S.SCORING, S.SANITIZING):
                # Most running experiments are healthy; a few lost their worker.
                lease = now + timedelta(seconds=rng.choice([-600, -60, 120, 300, 600, 900]))
            error = stage = None
            if status is S.FAILED:
                stage, error = rng.choice(["encode", "decode", "verify"]), "decoder returned 7 frames, expected 8"
            elif status is S.REJECTED:
                stage, error = "sanitize", "imports subprocess (not allowed)"
            elif status is S.TIMED_OUT:
                stage, error = "encode", "lease expired while encoding on gpu-3; attempt 3 of 3"
            duplicate_of = None
            if status is S.DUPLICATE_OUTPUT:
                if not succeeded:
                    status = S.SUCCEEDED
                else:
                    duplicate_of = rng.choice(succeeded)
                    stage, error = "score", f"bitstream already produced by experiment {duplicate_of}"
            if status is S.SUCCEEDED:
                succeeded.append(i)
            experiment_rows.append(
                (i, (candidate % N_CAMPAIGNS) + 1, candidate, (i % N_CLIPS) + 1, config_json, config_hash,
                 json.dumps(list(RATE_POINTS)), '["x264", "x265"]', status.value, stage, error, 0, duplicate_of,
                 f"gpu-{i % 8}", "cuda:0", "bubblewrap+seccomp+rlimits", lease, queued,
                 queued + timedelta(seconds=5) if status is not S.QUEUED else None, finished)
            )
        counts["experiments"] = copy_rows(
            conn, "experiments",
            ["id", "campaign_id", "candidate_id", "clip_id", "config", "config_hash", "rate_points", "anchors",
             "status", "failure_stage", "error", "attempts", "duplicate_of_id", "worker_host", "device",
             "isolation", "lease_expires_at", "queued_at", "sanitize_started_at", "finished_at"],
            experiment_rows,
        )

        artifact_rows, measurement_rows, score_rows = [], [], []
        artifact_id = 0
        for e in succeeded:
            base_psnr = rng.uniform(28, 34)
            for r, quality in enumerate(RATE_POINTS):
                artifact_id += 1
                n_bytes = int(2000 * (r + 1) * rng.uniform(0.8, 1.2))
                digest = sha(f"bitstream-{e}-{r}")
                artifact_rows.append(
                    (artifact_id, e, "bitstream", r, f"/srv/artifacts/{e}/rate{r}.cfv", n_bytes, digest, now)
                )
                bits = 8 * n_bytes
                psnr = base_psnr + 2.5 * r
                measurement_rows.append(
                    (artifact_id, artifact_id, r, quality, 30, n_bytes, bits, bits * 30.0 / 30 / 1000,
                     bits / (30 * 352 * 288), psnr - 0.5, psnr, psnr - 0.7, psnr - 0.2, 0, 0.85 + 0.03 * r,
                     0.9 + 0.02 * r, 5, 1.5, 0.8, 20.0, 37.5, None, "cf-eval-1", "cf-metrics-1",
                     sha(f"clip{(e % N_CLIPS) + 1}"), now)
                )
            for k, anchor in enumerate(("x264", "x265")):
                bd = rng.gauss(15.0 + 10 * k, 20.0)
                score_rows.append(
                    (len(score_rows) + 1, e, anchor, "psnr_y", max(bd, -95.0), -bd / 25, 0.9, None, "a1",
                     "cf-metrics-1", now)
                )
        counts["artifacts"] = copy_rows(
            conn, "artifacts", ["id", "experiment_id", "kind", "rate_index", "path", "n_bytes", "sha256", "created_at"],
            artifact_rows,
        )
        counts["measurements"] = copy_rows(
            conn, "measurements",
            ["id", "artifact_id", "rate_index", "quality", "n_frames", "n_bytes", "bits", "kbps", "bpp", "psnr_rgb",
             "psnr_y", "psnr_rgb_pooled", "psnr_y_pooled", "psnr_capped_frames", "ssim_y", "ms_ssim",
             "ms_ssim_scales", "encode_seconds", "decode_seconds", "encode_fps", "decode_fps", "peak_rss_bytes",
             "evaluator_version", "metrics_version", "clip_sha256", "created_at"],
            measurement_rows,
        )
        counts["scores"] = copy_rows(
            conn, "scores",
            ["id", "experiment_id", "anchor_codec", "metric", "bd_rate", "bd_psnr", "overlap", "reason",
             "anchor_version", "metrics_version", "created_at"],
            score_rows,
        )
        for table in counts:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return counts


_TERMINAL = {S.SUCCEEDED, S.FAILED, S.REJECTED, S.TIMED_OUT, S.DUPLICATE_OUTPUT, S.CANCELLED}

_INDEX_RE = re.compile(r"(Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)")
_SEQ_RE = re.compile(r"Seq Scan on (\w+)")


def capture_statements(engine: sa.Engine, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    captured: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    return captured


def explain(
    engine: sa.Engine, statements: list[tuple[str, Any]]
) -> tuple[list[str], list[str], list[str], float]:
    """Index names used, tables read by sequential scan, the plan text, and the
    server's execution time summed over the statements (ms)."""
    server_ms = 0.0
    indexes: list[str] = []
    seq: list[str] = []
    text: list[str] = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)]
            text.extend(plan)
            text.append("")
            for line in plan:
                if line.startswith("Execution Time:"):
                    server_ms += float(line.split()[2])
                if m := _INDEX_RE.search(line):
                    indexes.append(m.group(2))
                if m := _SEQ_RE.search(line):
                    seq.append(m.group(1))
    unique = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
    return unique(indexes), unique(seq), text, server_ms


def time_query(session: Session, call: Callable[[Session], Any], runs: int) -> tuple[float, float, Any]:
    result = None
    for _ in range(3):  # warm the caches and the statement cache
        result = call(session)
        session.rollback()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = call(session)
        samples.append((time.perf_counter() - t0) * 1000)
        session.rollback()
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return statistics.median(samples), p95, result


def machine_header(dsn: str) -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(dsn) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    return [
        f"machine: {platform.node()} | {cpu} | {os.cpu_count()} logical CPUs | "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()} | sqlalchemy {sa.__version__} | psycopg {psycopg.__version__} | "
        f"PostgreSQL {server}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=100_000)
    parser.add_argument(
        "--url", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database on the server to benchmark (used only to create and drop the benchmark database)",
    )
    parser.add_argument("--runs", type=int, default=20, help="timed runs per query (median and p95 reported)")
    parser.add_argument("--plans", action="store_true", help="print the full EXPLAIN ANALYZE plans")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    args = parser.parse_args(argv)

    admin = sa.make_url(args.url).set(drivername="postgresql")
    name = f"cf_bench_{secrets.token_hex(4)}"
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    bench = admin.set(database=name)
    dsn = bench.render_as_string(hide_password=False)
    url = bench.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    engine = None
    try:
        migrate.upgrade(url)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        counts = seed(dsn, args.experiments, now, random.Random(0))
        seed_s = time.perf_counter() - t0

        engine = make_engine(url)
        session = session_factory(engine)()
        busy_clip = sha("clip1")
        first_campaign = 1
        probe_hash, probe_clip = session.execute(  # a candidate that did run on a clip: the lookup hits
            sa.text(
                "SELECT c.ast_hash, cl.sha256 FROM experiments e JOIN candidates c ON c.id = e.candidate_id "
                "JOIN clips cl ON cl.id = e.clip_id WHERE e.status = 'succeeded' ORDER BY e.id DESC LIMIT 1"
            )
        ).one()
        cases: list[tuple[str, Callable[[Session], Any]]] = [
            ("leaderboard (one clip, top 20)", lambda s: rankings.leaderboard(s, clip_sha256=busy_clip, limit=20)),
            ("leaderboard (one campaign, top 20)", lambda s: rankings.leaderboard(s, campaign_id=first_campaign)),
            ("leaderboard (everything, top 20)", lambda s: rankings.leaderboard(s, limit=20)),
            (
                "top-K candidates + code (K=5, one clip)",
                lambda s: rankings.top_k_candidates(s, 5, clip_sha256=busy_clip),
            ),
            ("recent failures (n=20)", lambda s: rankings.recent_failures(s, 20)),
            ("expired leases (reaper)", lambda s: experiments.expired_leases(s, now)),
            (
                "dedup lookup (code, clip, config)",
                lambda s: results.find_reusable_experiment(
                    s, ast_hash=probe_hash, clip_sha256=probe_clip, config_hash=hashing.config_hash(CONFIG, RATE_POINTS)
                ),
            ),
        ]

        rows = []
        plans: list[str] = []
        for label, call in cases:
            median, p95, result = time_query(session, call, args.runs)
            statements = capture_statements(engine, lambda call=call: (call(session), session.rollback()))
            indexes, seqs, plan, server_ms = explain(engine, statements)
            n = len(result) if isinstance(result, list) else int(result is not None)
            rows.append((label, median, p95, server_ms, n, indexes, seqs))
            plans.append(f"-- {label}: {len(statements)} statement(s)")
            plans.extend(plan)
        session.close()

        print("\n".join(machine_header(dsn)))
        print(
            f"database: {', '.join(f'{k} {v:,}' for k, v in counts.items())}; seeded by COPY in {seed_s:.1f} s; "
            f"{args.runs} timed runs per query after 3 warm-up runs, through the db query modules (ORM, psycopg 3)"
        )
        print()
        header = (
            f"| {'query':<40} | {'median ms':>9} | {'p95 ms':>7} | {'server ms':>9} | {'rows':>4} | target | result "
            "| indexes used (EXPLAIN) |"
        )
        print(header)
        print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
        failed = False
        for label, median, p95, server_ms, n, indexes, seqs in rows:
            ok = p95 < TARGET_MS and median < TARGET_MS
            failed |= not ok
            used = ", ".join(indexes) or "none"
            if seqs:
                used += f"; seq scan: {', '.join(seqs)}"
            print(
                f"| {label:<40} | {median:>9.2f} | {p95:>7.2f} | {server_ms:>9.2f} | {n:>4} | <{TARGET_MS:.0f} ms | "
                f"{'pass' if ok else 'FAIL':<6} | {used} |"
            )
        print(
            "\nmedian/p95: wall time of the db query call in this process (ORM and driver included); "
            "server ms: PostgreSQL's own execution time (EXPLAIN ANALYZE), summed over the call's statements; "
            "a seq scan on clips is the planner's choice for a table of a few rows."
        )
        if args.plans:
            print()
            print("\n".join(plans))
        return 1 if failed else 0
    finally:
        if engine is not None:
            engine.dispose()
        if not args.keep:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")


if __name__ == "__main__":
    raise SystemExit(main())
