"""The closed vocabularies the database stores, and the schema revision, in a module
that imports nothing: ``db.models`` builds its columns and CHECKs from them (and
re-exports every name), and a command that only reads (``codecfleet status``,
``codecfleet db upgrade`` at head: :mod:`db.lean`) compares and filters with them
without loading SQLAlchemy."""

from __future__ import annotations

import enum

#: The newest migration in ``migrations/versions``: the schema ``db.models`` describes
#: (tests/db/test_db_migrations.py checks it against Alembic's head).
SCHEMA_REVISION = "0007"

#: How long a SQLite connection waits for another writer's lock (every connection, both paths).
SQLITE_BUSY_TIMEOUT_MS = 30_000


class ExperimentStatus(enum.StrEnum):
    QUEUED = "queued"
    GENERATING = "generating"
    SANITIZING = "sanitizing"
    ENCODING = "encoding"
    SCORING = "scoring"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    DUPLICATE_OUTPUT = "duplicate_output"
    CANCELLED = "cancelled"


S = ExperimentStatus


class Stage(enum.StrEnum):
    """Where an experiment that ended without a result stopped: ``experiments.failure_stage``
    (a CHECK holds the column to these). The one list: the tasks, the reaper and the
    queries name stages through it; a candidate's own faults
    (``evaluation.runner.CandidateError``) are the subset sanitize, import, encode,
    decode, verify."""

    QUEUE = "queue"  # timed out before any step held it
    GENERATE = "generate"  # no usable code from the generator
    SANITIZE = "sanitize"  # the sanitizer rejected the code
    CLIP = "clip"  # the worker could not load the clip it was sent
    PROBE = "probe"  # stopped by the probe (crashed, wrong output, worse than its parent)
    IMPORT = "import"  # the candidate module failed to load in the sandbox
    ENCODE = "encode"
    DECODE = "decode"
    VERIFY = "verify"  # decoded frames wrong, or not deterministic, or too few distinct points
    SCORE = "score"  # the bitstream changed, or the numbers could not be stored


#: A worker holds the experiment (and its lease) in these states.
RUNNING: frozenset[ExperimentStatus] = frozenset({S.GENERATING, S.SANITIZING, S.ENCODING, S.SCORING})
#: Nothing ever moves an experiment out of these.
TERMINAL: frozenset[ExperimentStatus] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.REJECTED, S.TIMED_OUT, S.DUPLICATE_OUTPUT, S.CANCELLED}
)
#: Statuses that end an experiment without a result, shown to the LLM as failures.
FAILURES: frozenset[ExperimentStatus] = frozenset({S.FAILED, S.REJECTED, S.TIMED_OUT, S.DUPLICATE_OUTPUT})
