"""Alembic: the same migrations on Postgres and SQLite, matching the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from db import migrate
from db.models import Base
from db.session import make_engine

REPO = Path(__file__).resolve().parents[2]
MODEL_TABLES = set(Base.metadata.tables)


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_on_an_empty_database(empty_db_url: str) -> None:
    assert table_names(empty_db_url) == set()

    migrate.upgrade(empty_db_url)

    assert table_names(empty_db_url) == MODEL_TABLES | {"alembic_version"}
    assert migrate.current_revision(empty_db_url) == migrate.head_revision()


def test_upgrade_downgrade_upgrade_round_trip(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    migrate.downgrade(empty_db_url, "base")

    assert table_names(empty_db_url) == {"alembic_version"}
    assert migrate.current_revision(empty_db_url) is None

    migrate.upgrade(empty_db_url)

    assert table_names(empty_db_url) == MODEL_TABLES | {"alembic_version"}
    migrate.check(empty_db_url)


def test_alembic_check_finds_no_difference_between_models_and_migrations(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)

    migrate.check(empty_db_url)  # raises MigrationDriftError on any difference


def test_alembic_check_reports_a_schema_that_drifted_from_the_models(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_experiments_status_lease_expires_at"))
    engine.dispose()

    with pytest.raises(migrate.MigrationDriftError, match="ix_experiments_status_lease_expires_at"):
        migrate.check(empty_db_url)


def test_alembic_command_line_check_is_clean(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)

    result = subprocess.run(
        [str(Path(sys.executable).with_name("alembic")), "-x", f"url={empty_db_url}", "check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_upgrade_creates_a_new_sqlite_file_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "data" / "codecfleet" / "codecfleet.db"

    migrate.upgrade(f"sqlite:///{path}")

    assert path.is_file()
    assert table_names(f"sqlite:///{path}") == MODEL_TABLES | {"alembic_version"}


def test_every_check_constraint_of_the_models_exists_after_migrating(empty_db_url: str) -> None:
    # `alembic check` does not compare CHECK constraints, so compare their names here.
    migrate.upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        inspector = sa.inspect(engine)
        migrated = {(t, c["name"]) for t in MODEL_TABLES for c in inspector.get_check_constraints(t)}
    finally:
        engine.dispose()
    modelled = {
        (table.name, constraint.name)
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, sa.CheckConstraint)
    }

    assert migrated == modelled
    assert ("artifacts", "ck_artifacts_sha256_is_sha256") in migrated


def test_0005_carries_measurements_forward_as_measured_rate_points(empty_db_url: str) -> None:
    from db import hashing

    migrate.upgrade(empty_db_url, "0004")
    engine = make_engine(empty_db_url)
    clip_sha, ast, art_sha = "c" * 64, "a" * 64, "b" * 64
    try:
        with engine.begin() as conn:
            run = conn.execute
            run(sa.text("INSERT INTO clips (id, sha256, source, width, height, n_frames, fps, created_at) "
                        "VALUES (1, :s, 'synthetic:mix', 176, 144, 4, 30.0, CURRENT_TIMESTAMP)"), {"s": clip_sha})
            run(sa.text("INSERT INTO candidates (id, code, ast_hash, generator, sanitizer_verdict, created_at) "
                        "VALUES (1, 'x', :a, 'user', 'accepted', CURRENT_TIMESTAMP)"), {"a": ast})
            run(sa.text("INSERT INTO experiments (id, candidate_id, clip_id, config, config_hash, rate_points, anchors, "
                        "status, attempts, device, queued_at, finished_at) VALUES (1, 1, 1, '{}', :h, '[0.5]', '[]', "
                        "'succeeded', 0, 'cpu', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"h": "d" * 64})
            run(sa.text("INSERT INTO artifacts (id, experiment_id, kind, rate_index, path, n_bytes, sha256, created_at) "
                        "VALUES (1, 1, 'bitstream', 0, '/a/rp0', 10, :s, CURRENT_TIMESTAMP)"), {"s": art_sha})
            run(sa.text(
                "INSERT INTO measurements (id, artifact_id, rate_index, quality, n_frames, n_bytes, bits, kbps, bpp, "
                "psnr_rgb, psnr_y, psnr_rgb_pooled, psnr_y_pooled, psnr_capped_frames, ssim_y, encode_seconds, "
                "decode_seconds, evaluator_version, metrics_version, clip_sha256, created_at) VALUES (1, 1, 0, 0.5, 4, "
                "10, 80, 0.6, 0.0001, 30, 31, 30, 31, 0, 0.9, 0.1, 0.1, 'e', 'm', :c, CURRENT_TIMESTAMP)"),
                {"c": clip_sha})
        engine.dispose()

        migrate.upgrade(empty_db_url)

        with engine.connect() as conn:
            m = conn.execute(sa.text("SELECT decoder_hash, experiment_id FROM measurements")).one()
            point = conn.execute(sa.text(
                "SELECT experiment_id, rate_index, quality, artifact_id, measurement_id, reused_from_id, path "
                "FROM experiment_points")).one()
    finally:
        engine.dispose()
    config = {"quality": 0.5, "width": 176, "height": 144, "fps": 30.0, "device": "cpu"}
    assert tuple(m) == (hashing.decoder_hash(ast, config), 1)
    assert tuple(point) == (1, 0, 0.5, 1, 1, None, "/a/rp0")
    migrate.check(empty_db_url)


def test_the_models_name_the_newest_migration() -> None:
    # db.engine.ensure_schema trusts this constant to skip Alembic on a database at head.
    from db.models import SCHEMA_REVISION

    assert SCHEMA_REVISION == migrate.head_revision()
