"""Secret seeds for synthetic clips (issue 12, finding 3).

* ``campaigns.clip_seed``: the seed a campaign's synthetic clips are generated
  with, drawn with ``secrets`` when the campaign starts (unless the user named
  one), so that resuming measures the same frames. Campaigns that existed
  before this revision measured the public default, seed 0, and keep it.
* ``clip_seeds``: per-database secret seeds outside any campaign (scope
  ``default``: submissions without a campaign).

The seed stays on the trusted side: a clip row's ``source`` holds the spec
that reproduces its frames; prompts and sandboxes see the seedless name.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clip_seed", sa.BigInteger(), nullable=True))
    # Campaigns started before secret seeds measured the public default (seed 0):
    # resuming one must measure those same frames.
    op.execute("UPDATE campaigns SET clip_seed = 0")
    op.create_table(
        "clip_seeds",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_clip_seeds")),
    )


def downgrade() -> None:
    op.drop_table("clip_seeds")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("clip_seed")
