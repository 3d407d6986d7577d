"""One list of failure stages: ``experiments.failure_stage`` is held to ``db.models.Stage``.

Every writer already used these names; the CHECK makes a new one impossible to add
by accident (a stage must be added to ``Stage`` and to a migration). A database
holding a stage outside the list is refused with the offending values named.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 03:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The stages as of this revision (``db.models.Stage``), written out: a migration
#: must not change when the model does.
_STAGES = ("clip", "decode", "encode", "generate", "import", "probe", "queue", "sanitize", "score", "verify")
_CONDITION = f"failure_stage IS NULL OR (failure_stage IN ({', '.join(repr(s) for s in _STAGES)}))"


def upgrade() -> None:
    unknown = op.get_bind().execute(
        sa.text(f"SELECT DISTINCT failure_stage FROM experiments WHERE NOT ({_CONDITION})")
    ).scalars().all()
    if unknown:
        raise RuntimeError(f"experiments.failure_stage holds stages outside {_STAGES}: {sorted(unknown)}")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_experiments_failure_stage"), sa.text(_CONDITION))


def downgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_experiments_failure_stage"), type_="check")
