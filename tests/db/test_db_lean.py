"""db.lean (the status listing's SQLite reads without SQLAlchemy) gives the same rows as
the repository queries it mirrors, on one database holding every kind of row the
listing shows; and it steps aside (None) wherever it cannot be sure."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa

from db import experiments, lean
from db.models import ExperimentStatus as S
from db.session import make_engine, session_factory
from db.vocabulary import SCHEMA_REVISION
from db_factories import finished, later, make_clip, make_experiment


@pytest.fixture
def url(sqlite_template, tmp_path) -> str:
    path = tmp_path / "codecfleet.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def _fill(url: str) -> None:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session, session.begin():
            clip = make_clip(session)
            finished(session, clip, 12.5, code="def a(): pass")
            waiting = make_experiment(session, clip, code="def b(): pass", now=later(1))
            make_experiment(session, clip, code="def c(): pass", to=S.ENCODING, now=later(2), host="gpu-7[42]")
            failing = make_experiment(session, clip, code="def d(): pass", to=S.SANITIZING, now=later(3))
            experiments.transition(session, failing.id, S.FAILED, failure_stage="import",
                                   error="ImportError: no module named 'évil' | <b>", now=later(4))
            cancelled = make_experiment(session, clip, code="def e(): pass", now=later(5))
            experiments.cancel_experiment(session, cancelled.id, reason="by hand", now=later(6))
            for i, (eid, stage) in enumerate([(waiting.id, "sanitize"), (waiting.id, "encode"), (failing.id, "score")]):
                experiments.record_internal_error(
                    session, eid, task="codecfleet.encode_decode", stage=stage, holder=None,
                    error=f"KeyError: {i}", traceback="Traceback ...", max_attempts=3, now=later(7 + i),
                )
    finally:
        engine.dispose()


def _orm(url: str) -> tuple:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            return (experiments.recent_experiments(session, 50), experiments.waiting_experiments(session, limit=50),
                    experiments.internal_errors(session, limit=50), experiments.internal_error_count(session))
    finally:
        engine.dispose()


def test_lean_reads_give_the_repository_queries_rows(url):
    _fill(url)
    recent, waiting, bugs, n_bugs = _orm(url)
    conn = lean.open_embedded(url)
    assert conn is not None
    try:
        l_recent, l_waiting = lean.recent_experiments(conn, 50), lean.waiting_experiments(conn, 50)
        l_bugs, l_n = lean.internal_errors(conn, 50), lean.internal_error_count(conn)
    finally:
        conn.close()

    fields = ("id", "failure_stage", "error", "attempts", "worker_host", "queued_at", "waiting_for", "waiting_since")
    assert len(recent) == 5 and [e.id for e in l_recent] == [e.id for e in recent]
    for o, lr in zip(recent, l_recent):
        assert lr.status == o.status.value
        assert [getattr(lr, f) for f in fields] == [getattr(o, f) for f in fields]
    assert any(e.waiting_since is not None for e in l_recent) and all(
        e.queued_at.tzinfo is not None for e in l_recent)
    assert [(w.id, w.waiting_for, w.waiting_since, w.attempts) for w in l_waiting] == [
        (w.experiment_id, w.waiting_for, w.waiting_since, w.attempts) for w in waiting]
    assert len(waiting) == 1  # the queued one (sent back twice by the internal errors)
    assert l_n == n_bugs == 3
    assert [(b.experiment_id, b.count, b.last_error, b.last_stage, b.last_at, b.status) for b in l_bugs] == [
        (b.experiment_id, b.count, b.last_error, b.last_stage, b.last_at, b.status.value if b.status else None)
        for b in bugs]
    assert [b.count for b in l_bugs] == [1, 2] and l_bugs[1].last_at == later(8)


def test_lean_is_read_only(url):
    conn = lean.open_embedded(url)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM experiments")
    finally:
        conn.close()


def test_lean_steps_aside_where_it_cannot_be_sure(url, tmp_path):
    path = url.removeprefix("sqlite:///")
    assert lean.stored_revision(url) == SCHEMA_REVISION
    # another schema revision: SQLAlchemy and Alembic take it from there
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))
    engine.dispose()
    assert lean.open_embedded(url) is None and lean.stored_revision(url) is None
    # no database yet, an empty file, URLs it does not parse
    assert lean.open_embedded(f"sqlite:///{tmp_path / 'absent.db'}") is None
    (tmp_path / "empty.db").write_bytes(b"")
    assert lean.open_embedded(f"sqlite:///{tmp_path / 'empty.db'}") is None
    for other in (f"sqlite:///{path}?timeout=5", "sqlite://", "sqlite:///:memory:",
                  "postgresql+psycopg://postgres@127.0.0.1/test", f"sqlite+pysqlite:///{path}"):
        assert lean.sqlite_path(other) is None, other


_PROBE = """
import sys
from codecfleet import cli
rc = cli.main(sys.argv[1:])
print("sqlalchemy" in sys.modules, file=sys.stderr)
sys.exit(rc)
"""


def _status_json(url: str, tmp_path) -> tuple[dict, bool]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CODECFLEET_DATABASE_URL": url,
           "CODECFLEET_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, "status", "--json", "--limit", "50"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr.strip().splitlines()[-1] == "True"


def _without_clock(status: dict) -> dict:
    """The listing less the seconds counted up to now (the two runs are a moment apart)."""
    status = json.loads(json.dumps(status))
    for row in status["experiments"]:
        row.pop("waiting_seconds")
    for queue in status["waiting"]:
        queue.pop("longest_seconds")
    return status


def test_codecfleet_status_prints_the_same_through_either_path(url, tmp_path):
    _fill(url)
    lean_status, lean_loaded = _status_json(url, tmp_path)
    orm_status, orm_loaded = _status_json(url + "?timeout=30", tmp_path)  # a driver option: the SQLAlchemy path

    assert (lean_loaded, orm_loaded) == (False, True)
    assert _without_clock(lean_status) == _without_clock(orm_status)
    assert [r["status"] for r in lean_status["experiments"]] == [
        "cancelled", "failed", "encoding", "queued", "succeeded"]
    assert lean_status["internal_errors"]["total"] == 3 and lean_status["waiting"][0]["waiting"] == 1
    for a, b in zip(lean_status["experiments"], orm_status["experiments"]):
        assert (a["waiting_seconds"] is None) == (b["waiting_seconds"] is None)
        if a["waiting_seconds"] is not None:
            assert abs(a["waiting_seconds"] - b["waiting_seconds"]) < 60
