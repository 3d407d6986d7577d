"""Fleet: waiting is not running (hand-off columns), and internal errors counted.

* ``experiments.waiting_since`` / ``waiting_for``: set while the next step's
  message sits in a broker queue and no worker holds the experiment (no lease
  runs meanwhile, so a backlog never times an experiment out);
* ``internal_errors``: one row per unexpected exception in a step (a bug of
  codecfleet), listed by ``codecfleet status``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 23:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("waiting_for", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_experiments_waiting_since", ["waiting_since"], unique=False)
        batch_op.create_check_constraint(
            op.f("ck_experiments_waiting_has_no_lease"),
            "waiting_since IS NULL OR (lease_expires_at IS NULL AND waiting_for IS NOT NULL)",
        )
    # Experiments queued before this revision wait for their first step.
    op.execute(
        "UPDATE experiments SET waiting_since = queued_at, "
        "waiting_for = CASE WHEN candidate_id IS NULL THEN 'generate' ELSE 'sanitize' END "
        "WHERE status = 'queued'"
    )
    op.create_table(
        "internal_errors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("worker_host", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name=op.f("fk_internal_errors_experiment_id_experiments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_internal_errors")),
    )
    with op.batch_alter_table("internal_errors", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_internal_errors_experiment_id"), ["experiment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("internal_errors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_internal_errors_experiment_id"))
    op.drop_table("internal_errors")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_experiments_waiting_has_no_lease"), type_="check")
        batch_op.drop_index("ix_experiments_waiting_since")
        batch_op.drop_column("waiting_for")
        batch_op.drop_column("waiting_since")
