"""Fixtures: fresh databases on SQLite and on the real Postgres.

Every database starts from the real migrated schema. SQLite: each test gets a
copy of a file migrated once per session. Postgres: each test module gets its
own database cloned from a template migrated once per session (``CREATE
DATABASE ... TEMPLATE``), and every table is truncated before each test, so
each test sees an empty schema without paying for a database per test.
Migration tests use ``empty_db_url``: a brand-new empty database per test.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from db import migrate
from db.models import Base
from db.session import make_engine, session_factory

PG_HOST = os.environ.get("CODECFLEET_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CODECFLEET_TEST_PG_PORT", "5432"))
PG_ADMIN = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres connect_timeout=5"


def pg_url(database: str) -> str:
    return f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{database}"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        _admin("SELECT 1")
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} (user postgres, trust auth) is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " -- CI must run the Postgres tests", pytrace=False)
        pytest.skip(message)


def _create_pg_database(template: str | None = None) -> str:
    name = f"cf_test_{secrets.token_hex(6)}"
    # FILE_COPY (PostgreSQL 15+) clones a small template several times faster than WAL_LOG.
    strategy = " STRATEGY FILE_COPY" if template and _server_version() >= 150000 else ""
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"{strategy}' if template else ""))
    return name


def _server_version() -> int:
    with psycopg.connect(PG_ADMIN) as conn:
        return conn.info.server_version


def _drop_pg_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template(postgres_available: None) -> Iterator[str]:
    name = _create_pg_database()
    try:
        migrate.upgrade(pg_url(name))
        yield name
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    assert not Path(f"{path}-wal").exists(), "WAL not checkpointed: the copy would miss tables"
    return path


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a brand-new, empty database (no tables)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'codecfleet.db'}"
        return
    request.getfixturevalue("postgres_available")
    name = _create_pg_database()
    try:
        yield pg_url(name)
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="module")
def pg_module_database(pg_template: str) -> Iterator[str]:
    name = _create_pg_database(template=pg_template)
    try:
        yield name
    finally:
        _drop_pg_database(name)


def _truncate_all(database: str) -> None:
    tables = ", ".join(f'"{t}"' for t in Base.metadata.tables)
    dsn = PG_ADMIN.replace("dbname=postgres", f"dbname={database}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")  # a leaked connection fails the test, never hangs it
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a database migrated to head, with every table empty."""
    if request.param == "sqlite":
        path = tmp_path / "codecfleet.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    name = request.getfixturevalue("pg_module_database")
    _truncate_all(name)
    yield pg_url(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: sa.Engine) -> Iterator[Session]:
    session = session_factory(engine)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()
