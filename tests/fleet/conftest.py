"""Fixtures for the fleet: real Redis, real Postgres, real worker processes.

Every fleet gets its own redis-server on a free loopback port (AOF on, as in
production) and its own Postgres database, cloned from a template migrated
once per session on the machine's server (127.0.0.1:5432, user postgres,
trust auth) and dropped afterwards. Workers are ``codecfleet worker``
processes with unique node names, stopped by pid.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fleet_harness import Process, RedisServer, fleet_env, require, start_worker, use_settings

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def pg_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session")
def fleet_pg_template() -> Iterator[str]:
    try:
        _admin("SELECT 1")
        ok, why = True, ""
    except psycopg.OperationalError as exc:
        ok, why = False, str(exc)
    require(ok, f"PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is unreachable: {why}")
    from db import migrate

    name = f"cf_fleet_tpl_{secrets.token_hex(5)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(pg_url(name))
        yield name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_database(template: str) -> str:
    name = f"cf_fleet_{secrets.token_hex(6)}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    return name


def drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Fleet:
    """One broker, one database, some workers; all torn down by the fixture."""

    def __init__(self, workdir: Path, redis: RedisServer, database_url: str, **overrides):
        self.workdir = workdir
        self.redis = redis
        self.database_url = database_url
        self.env = fleet_env(redis.url, database_url, workdir, **overrides)
        self.workers: list[Process] = []
        self.extra: list[Process] = []

    def worker(self, queues: str, **kwargs) -> Process:
        w = start_worker(self.env, self.workdir, queues, **kwargs)
        self.workers.append(w)
        return w

    def setting(self, name: str) -> float:
        return float(self.env[f"CODECFLEET_{name.upper()}"])

    def heal_seconds(self) -> float:
        """How long the fleet may take to notice a lost worker and hand its experiment on:
        the lease running out, a reaper pass after it, and a heartbeat of slack; every
        fault test derives its deadlines from this instead of guessing wall-clock time."""
        return self.setting("lease_seconds") + 2 * self.setting("reap_interval_seconds") + self.setting(
            "heartbeat_seconds"
        )

    def activate(self) -> None:
        """Make this test process submit to and read from this fleet."""
        use_settings(self.env)

    def close(self) -> None:
        processes = [*self.extra, *self.workers]
        for p in processes:  # all shut down at once, not one after the other
            p.terminate()
        for p in processes:
            p.stop(timeout=15)
        self.redis.stop()


@pytest.fixture
def make_fleet(tmp_path_factory, fleet_pg_template) -> Iterator:
    """``make_fleet(**settings)``: a fresh Redis and database; start workers on it yourself."""
    fleets: list[tuple[Fleet, str]] = []
    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}

    def make(database_url: str | None = None, **overrides) -> Fleet:
        workdir = tmp_path_factory.mktemp("fleet")
        redis = RedisServer(workdir)
        redis.start()
        name = new_database(fleet_pg_template) if database_url is None else ""
        fleet = Fleet(workdir, redis, database_url or pg_url(name), **overrides)
        fleets.append((fleet, name))
        fleet.activate()
        return fleet

    yield make
    for fleet, name in fleets:
        fleet.close()
    from db import engine

    engine.reset()
    for _, name in fleets:
        if name:
            drop_database(name)
    _restore(saved)


def _restore(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith("CODECFLEET_")]:
        del os.environ[key]
    os.environ.update(saved)
    from config import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory, fleet_pg_template) -> Iterator[Fleet]:
    """A cpu worker (with beat) and a gpu worker, shared by the tests of one module."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("CODECFLEET_")}
    workdir = tmp_path_factory.mktemp("shared-fleet")
    redis = RedisServer(workdir)
    redis.start()
    name = new_database(fleet_pg_template)
    fleet = Fleet(workdir, redis, pg_url(name))
    try:
        fleet.worker("cpu,llm", beat=True)
        fleet.worker("gpu", name=f"gpu0-{os.getpid()}@127.0.0.1")
        yield fleet
    finally:
        fleet.close()
        from db import engine

        engine.reset()
        drop_database(name)
        _restore(saved)


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    shared_fleet.activate()
    return shared_fleet
