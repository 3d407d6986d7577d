"""The command line's read-only view of the embedded SQLite database, without SQLAlchemy.

Why it exists: ``codecfleet status`` should answer in about half a second, and on a
slow 2-core host importing SQLAlchemy alone takes that long (psycopg a third of a
second more). The embedded default keeps its database in SQLite, which the standard
library opens in milliseconds. So for a SQLite URL whose schema is at
:data:`db.vocabulary.SCHEMA_REVISION`, the status listing and ``db upgrade`` at head
read here in plain SQL; for anything else (Postgres, a database still to create or
migrate, a URL with options) :func:`open_embedded` gives None and the caller takes
the SQLAlchemy path.

Read-only by construction: the file is opened with ``mode=ro``, so nothing here can
change what the state machine (``db.experiments``) owns. The queries mirror
``db.experiments.recent_experiments``, ``waiting_experiments``, ``internal_errors``
and ``internal_error_count``; ``tests/db/test_db_lean.py`` checks them row for row
against those, and that both paths print the same status for the same database.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from db.vocabulary import SCHEMA_REVISION, SQLITE_BUSY_TIMEOUT_MS, TERMINAL


def sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite:///PATH`` URL (relative or absolute); None for any
    other URL (another backend, a driver name, query options, in-memory)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    path = url[len(prefix):]
    return path if path and path != ":memory:" else None


def never_created(url: str) -> bool:
    """Whether ``url`` names an SQLite file that does not exist yet: nothing was ever
    run against it, so a listing has nothing to show (and creates nothing)."""
    path = sqlite_path(url)
    return path is not None and not os.path.exists(path)


def open_embedded(url: str) -> sqlite3.Connection | None:
    """A read-only connection to the SQLite database at ``url`` when its schema is the
    one this code describes; None otherwise (the caller goes through SQLAlchemy, which
    creates or migrates it)."""
    path = sqlite_path(url)
    if path is None or not os.path.isfile(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True,
                               timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        row = None
    if row is None or row[0] != SCHEMA_REVISION:
        conn.close()
        return None
    return conn


def stored_revision(url: str) -> str | None:
    """SCHEMA_REVISION when the SQLite database at ``url`` is at it, else None (unknown
    here: ask ``db.session.stored_revision``)."""
    conn = open_embedded(url)
    if conn is None:
        return None
    conn.close()
    return SCHEMA_REVISION


def _when(value: str | None) -> datetime | None:
    """A stored timestamp (naive UTC text, as ``db.models.UTCDateTime`` writes it on SQLite)."""
    if value is None:
        return None
    when = datetime.fromisoformat(value)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass(frozen=True)
class ExperimentRow:
    """What the status listing shows of one experiment (the columns it reads of ``db.models.Experiment``)."""

    id: int
    status: str
    failure_stage: str | None
    error: str | None
    attempts: int
    worker_host: str | None
    queued_at: datetime
    waiting_for: str | None
    waiting_since: datetime | None


@dataclass(frozen=True)
class InternalErrorRow:
    """One experiment's internal errors (``db.experiments.InternalErrorSummary``'s fields)."""

    experiment_id: int | None
    count: int
    last_error: str
    last_stage: str
    last_at: datetime
    status: str | None


_EXPERIMENT_COLUMNS = "id, status, failure_stage, error, attempts, worker_host, queued_at, waiting_for, waiting_since"


def _experiment(row: tuple) -> ExperimentRow:
    return ExperimentRow(row[0], row[1], row[2], row[3], row[4], row[5], _when(row[6]), row[7], _when(row[8]))


def recent_experiments(conn: sqlite3.Connection, limit: int) -> list[ExperimentRow]:
    """The newest experiments, newest first."""
    rows = conn.execute(f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments ORDER BY id DESC LIMIT ?", (limit,))
    return [_experiment(r) for r in rows]


def waiting_experiments(conn: sqlite3.Connection, limit: int) -> list[ExperimentRow]:
    """Experiments waiting in a queue, longest first."""
    terminal = sorted(s.value for s in TERMINAL)
    rows = conn.execute(
        f"SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE waiting_since IS NOT NULL "
        f"AND status NOT IN ({', '.join('?' * len(terminal))}) ORDER BY waiting_since, id LIMIT ?",
        (*terminal, limit),
    )
    return [_experiment(r) for r in rows]


def internal_errors(conn: sqlite3.Connection, limit: int) -> list[InternalErrorRow]:
    """Experiments that met an internal error, most recent first, with how many."""
    rows = conn.execute(
        "SELECT last.experiment_id, last.n, ie.error, ie.stage, ie.created_at, e.status "
        "FROM (SELECT experiment_id, count(*) AS n, max(id) AS last_id FROM internal_errors "
        "      GROUP BY experiment_id) AS last "
        "JOIN internal_errors AS ie ON ie.id = last.last_id "
        "LEFT OUTER JOIN experiments AS e ON e.id = last.experiment_id "
        "ORDER BY last.last_id DESC LIMIT ?",
        (limit,),
    )
    return [InternalErrorRow(r[0], r[1], r[2], r[3], _when(r[4]), r[5]) for r in rows]


def internal_error_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM internal_errors").fetchone()[0]


__all__ = [
    "ExperimentRow",
    "InternalErrorRow",
    "internal_error_count",
    "internal_errors",
    "never_created",
    "open_embedded",
    "recent_experiments",
    "sqlite_path",
    "stored_revision",
    "waiting_experiments",
]
