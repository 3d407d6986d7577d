"""`codecfleet db upgrade` creates the schema on a new SQLite file and an empty Postgres database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EXPECTED_TABLES = {"campaigns", "clips", "candidates", "experiments", "artifacts", "measurements", "scores"}


def _upgrade(env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CODECFLEET_DATABASE_URL"}
    env.update(CODECFLEET_DATA_DIR=str(tmp_path / "data"), **env_extra)
    return subprocess.run([sys.executable, "-m", "codecfleet.cli", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_db_upgrade_creates_the_default_sqlite_file(tmp_path):
    proc = _upgrade({}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    db_file = tmp_path / "data" / "codecfleet.db"
    assert db_file.is_file()
    tables = set(sa.inspect(sa.create_engine(f"sqlite:///{db_file}")).get_table_names())
    assert EXPECTED_TABLES <= tables


@pytest.fixture
def empty_postgres_db():
    name = f"cf_cli_{uuid.uuid4().hex[:10]}"
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 unreachable: {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_db_upgrade_creates_the_schema_on_an_empty_postgres_database(empty_postgres_db, tmp_path):
    proc = _upgrade({"CODECFLEET_DATABASE_URL": empty_postgres_db}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout
    engine = sa.create_engine(empty_postgres_db)
    try:
        assert EXPECTED_TABLES <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
