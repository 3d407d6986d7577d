"""The process's database: one engine per process, one session per transaction.

Every layer that writes (tasks, the fleet API, campaigns, the CLI) takes its
transactions here; ``db.session`` holds the URL-explicit building blocks.

The engine is made lazily from ``settings.database_url`` on first use, so a
forked pool process builds its own connections (``dispose_after_fork`` drops
the ones inherited from the parent without closing them under its feet).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from config import get_settings
from db.vocabulary import SCHEMA_REVISION
from db.session import make_engine, session_factory, session_scope, stored_revision

_lock = threading.Lock()
_engine: sa.Engine | None = None
_factory: sessionmaker[Session] | None = None
_upgraded: set[str] = set()


def engine() -> sa.Engine:
    global _engine, _factory
    with _lock:
        if _engine is None:
            _engine = make_engine(get_settings().database_url)
            _factory = session_factory(_engine)
        return _engine


@contextmanager
def transaction() -> Iterator[Session]:
    """One committed transaction (rolled back if the block raises)."""
    engine()
    assert _factory is not None
    with session_scope(_factory) as session:
        yield session


def ensure_schema() -> None:
    """Migrate the database to head once per process (the embedded default only:
    a fleet's schema is upgraded by ``codecfleet db upgrade``).

    A database already at :data:`db.models.SCHEMA_REVISION` is recognised with one
    query, so read-only commands never load Alembic."""
    url = get_settings().database_url
    if url in _upgraded:
        return
    if stored_revision(engine()) != SCHEMA_REVISION:  # behind head (or new): Alembic takes it there
        from db import migrate

        migrate.upgrade(url)
    _upgraded.add(url)


def dispose_after_fork() -> None:
    """Forget the parent's pooled connections in a forked child (SQLAlchemy's recipe)."""
    if _engine is not None:
        _engine.dispose(close=False)


def reset() -> None:
    """Drop the engine (settings changed, e.g. between tests)."""
    global _engine, _factory
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None
        _factory = None
