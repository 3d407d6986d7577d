"""Alembic environment: the same migrations on Postgres and SQLite.

SQLite cannot ALTER most things, so autogenerate and migrations run in batch
mode (copy the table, swap it in). Foreign keys are switched off on the
migration connection while tables are rebuilt, and checked once at the end.

The URL comes from, in order: ``alembic -x url=...``, ``sqlalchemy.url`` set on
the Config (``db.migrate`` does this), the CODECFLEET_DATABASE_URL variable.
"""

from __future__ import annotations

import os
from typing import Literal

import sqlalchemy as sa

from alembic import context
from sqlalchemy.pool import NullPool

from db.models import Base, UTCDateTime
from db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("CODECFLEET_DATABASE_URL")
    if not url:
        raise SystemExit(
            "no database URL: pass `alembic -x url=...`, set CODECFLEET_DATABASE_URL, "
            "or use `codecfleet db upgrade`"
        )
    return url


def _render_item(type_: str, obj: object, autogen_context: object) -> str | Literal[False]:
    # Migrations are frozen history: render plain SQLAlchemy types, never the
    # model module's own (a later edit to db.models must not change an old revision).
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, sa.Enum) and not obj.native_enum:
        return f"sa.String(length={obj.length})"
    return False


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_item=_render_item,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url(), foreign_keys=False, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
                if connection.dialect.name == "sqlite":
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left dangling foreign keys: {broken[:10]}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
