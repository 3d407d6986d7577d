"""A measurement per (bitstream, decoder); rate points that reuse one; the probe stage.

* ``measurements``: no longer unique per artifact. New columns ``decoder_hash``
  (sha256 of the candidate's normalised-AST hash and the config its decoder was
  handed), ``experiment_id`` (who measured it), ``frame_psnr_y`` / ``frame_bytes``;
  unique (artifact_id, decoder_hash, clip_sha256, metrics_version).
* ``experiment_points``: one row per rate point of an experiment, naming its
  bitstream and the measurement that gives its numbers (measured there, reused
  from another experiment, or the same bytes as an earlier rate point).
* ``probes``: the cheap first stage (first frames at one quality), its verdict
  and the seconds it saved.

Existing data is carried forward: every stored measurement gets its decoder hash
(computed from its experiment's candidate and config exactly as
``db.hashing.decoder_hash`` does) and its experiment, and becomes the measured
rate point of the experiment that produced its artifact.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 23:50:00+00:00
"""

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _decoder_hash(ast_hash: str | None, config: dict) -> str:
    # Frozen copy of db.hashing.decoder_hash (then db.queries.decoder_hash) as of this revision.
    payload = {"ast_hash": ast_hash, "config": config}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decoder_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("experiment_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("frame_psnr_y", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("frame_bytes", sa.JSON(), nullable=True))

    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT m.id, m.quality, a.experiment_id, c.ast_hash, e.device, cl.width, cl.height, cl.fps "
            "FROM measurements m JOIN artifacts a ON a.id = m.artifact_id "
            "JOIN experiments e ON e.id = a.experiment_id "
            "LEFT JOIN candidates c ON c.id = e.candidate_id "
            "JOIN clips cl ON cl.id = e.clip_id"
        )
    ).all()
    for row in rows:
        config = {"quality": float(row.quality), "width": row.width, "height": row.height,
                  "fps": float(row.fps), "device": row.device}
        conn.execute(
            sa.text("UPDATE measurements SET decoder_hash = :h, experiment_id = :e WHERE id = :id"),
            {"h": _decoder_hash(row.ast_hash, config), "e": row.experiment_id, "id": row.id},
        )

    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.alter_column("decoder_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("experiment_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_constraint(op.f("uq_measurements_artifact_id"), type_="unique")
        batch_op.create_unique_constraint(
            op.f("uq_measurements_artifact_id_decoder_hash_clip_sha256_metrics_version"),
            ["artifact_id", "decoder_hash", "clip_sha256", "metrics_version"],
        )
        batch_op.create_check_constraint(op.f("ck_measurements_decoder_hash_is_sha256"), "length(decoder_hash) = 64")
        batch_op.create_foreign_key(
            op.f("fk_measurements_experiment_id_experiments"), "experiments", ["experiment_id"], ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_measurements_experiment_id"), ["experiment_id"], unique=False)

    op.create_table(
        "experiment_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("rate_index", sa.Integer(), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("measurement_id", sa.Integer(), nullable=False),
        sa.Column("reused_from_id", sa.Integer(), nullable=True),
        sa.Column("same_as_rate_index", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rate_index >= 0", name=op.f("ck_experiment_points_rate_index_non_negative")),
        sa.CheckConstraint("quality >= 0 AND quality <= 1", name=op.f("ck_experiment_points_quality_range")),
        sa.CheckConstraint(
            "reused_from_id IS NULL OR reused_from_id <> experiment_id",
            name=op.f("ck_experiment_points_not_reused_from_itself"),
        ),
        sa.CheckConstraint(
            "same_as_rate_index IS NULL OR (same_as_rate_index >= 0 AND same_as_rate_index < rate_index)",
            name=op.f("ck_experiment_points_same_as_an_earlier_point"),
        ),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"],
                                name=op.f("fk_experiment_points_artifact_id_artifacts")),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE",
                                name=op.f("fk_experiment_points_experiment_id_experiments")),
        sa.ForeignKeyConstraint(["measurement_id"], ["measurements.id"],
                                name=op.f("fk_experiment_points_measurement_id_measurements")),
        sa.ForeignKeyConstraint(["reused_from_id"], ["experiments.id"],
                                name=op.f("fk_experiment_points_reused_from_id_experiments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_points")),
        sa.UniqueConstraint("experiment_id", "rate_index", name=op.f("uq_experiment_points_experiment_id_rate_index")),
    )
    with op.batch_alter_table("experiment_points", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiment_points_artifact_id"), ["artifact_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_experiment_points_measurement_id"), ["measurement_id"], unique=False)
    # Every stored measurement is the measured rate point of the experiment that made its file.
    op.execute(
        "INSERT INTO experiment_points (experiment_id, rate_index, quality, artifact_id, measurement_id, path, created_at) "
        "SELECT a.experiment_id, m.rate_index, m.quality, a.id, m.id, a.path, m.created_at "
        "FROM measurements m JOIN artifacts a ON a.id = m.artifact_id"
    )

    op.create_table(
        "probes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("payload_bytes", sa.BigInteger(), nullable=True),
        sa.Column("psnr_y", sa.Float(), nullable=True),
        sa.Column("parent_experiment_id", sa.Integer(), nullable=True),
        sa.Column("parent_psnr_y", sa.Float(), nullable=True),
        sa.Column("margin_db", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("saved_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('crashed', 'passed', 'worse_than_parent', 'wrong_output')", name=op.f("ck_probes_outcome")
        ),
        sa.CheckConstraint("outcome = 'passed' OR reason IS NOT NULL", name=op.f("ck_probes_stop_has_reason")),
        sa.CheckConstraint("quality >= 0 AND quality <= 1", name=op.f("ck_probes_quality_range")),
        sa.CheckConstraint("n_frames > 0", name=op.f("ck_probes_n_frames_positive")),
        sa.CheckConstraint("(psnr_y IS NULL OR (psnr_y >= 0 AND psnr_y <= 100.0))",
                           name=op.f("ck_probes_psnr_y_range")),
        sa.CheckConstraint("(parent_psnr_y IS NULL OR (parent_psnr_y >= 0 AND parent_psnr_y <= 100.0))",
                           name=op.f("ck_probes_parent_psnr_y_range")),
        sa.CheckConstraint("seconds >= 0 AND seconds <= 1000000000.0 AND saved_seconds >= 0 AND saved_seconds <= 1000000000.0",
                           name=op.f("ck_probes_seconds_finite")),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE",
                                name=op.f("fk_probes_experiment_id_experiments")),
        sa.ForeignKeyConstraint(["parent_experiment_id"], ["experiments.id"],
                                name=op.f("fk_probes_parent_experiment_id_experiments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probes")),
        sa.UniqueConstraint("experiment_id", name=op.f("uq_probes_experiment_id")),
    )


def downgrade() -> None:
    op.drop_table("probes")
    with op.batch_alter_table("experiment_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiment_points_measurement_id"))
        batch_op.drop_index(batch_op.f("ix_experiment_points_artifact_id"))
    op.drop_table("experiment_points")
    # Back to one measurement per artifact: keep the first of each artifact.
    op.execute(
        "DELETE FROM measurements WHERE id NOT IN (SELECT min(id) FROM measurements GROUP BY artifact_id)"
    )
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_measurements_experiment_id"))
        batch_op.drop_constraint(op.f("fk_measurements_experiment_id_experiments"), type_="foreignkey")
        batch_op.drop_constraint(op.f("ck_measurements_decoder_hash_is_sha256"), type_="check")
        batch_op.drop_constraint(
            op.f("uq_measurements_artifact_id_decoder_hash_clip_sha256_metrics_version"), type_="unique"
        )
        batch_op.create_unique_constraint(op.f("uq_measurements_artifact_id"), ["artifact_id"])
        batch_op.drop_column("frame_bytes")
        batch_op.drop_column("frame_psnr_y")
        batch_op.drop_column("experiment_id")
        batch_op.drop_column("decoder_hash")
