"""Engines and sessions for Postgres (the fleet) and SQLite (the embedded default).

The URL is always an explicit argument: this package never reads the
environment (the face passes ``settings.database_url``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from db.vocabulary import SQLITE_BUSY_TIMEOUT_MS  # how long an SQLite writer waits for another's lock


def make_engine(url: str | sa.URL, *, foreign_keys: bool = True, **kwargs: Any) -> sa.Engine:
    """An engine for ``url`` set up for concurrent workers.

    SQLite: foreign keys enforced (``foreign_keys=False`` only for migrations,
    which rebuild tables), WAL journal so readers never block the writer, a busy
    timeout so a second process waits for the write lock instead of failing, and
    every transaction started with ``BEGIN IMMEDIATE``.

    Why ``BEGIN IMMEDIATE``: pysqlite begins transactions lazily and in WAL mode a
    transaction that read first and writes second fails at once with "database is
    locked" when another process committed in between (the busy timeout does not
    apply to a stale snapshot). Taking the write lock at BEGIN makes two workers
    queue instead; it also makes SAVEPOINT work, which ``record_result`` needs
    (this is the recipe from the SQLAlchemy pysqlite documentation).

    Postgres: ``pool_pre_ping`` so a worker survives a database restart.
    """
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **kwargs)
        _configure_sqlite(engine, foreign_keys=foreign_keys)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


def _configure_sqlite(engine: sa.Engine, *, foreign_keys: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (see the "begin" hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit when the block ends, roll back if it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def stored_revision(engine: sa.Engine) -> str | None:
    """The migration revision recorded in the database (``alembic_version``), read
    with one query and without loading Alembic; None when it was never migrated."""
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DBAPIError:  # no such table yet
        return None


__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "make_engine", "session_factory", "session_scope", "stored_revision"]
