"""Fleet: waiting is not running (hand-off timestamps), and internal errors counted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 23:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
