"""Paper-grade numbers (issue 15): YUV 4:2:0 PSNR, the determinism check's cost,
reliability of BD figures.

* ``measurements``: ``psnr_y420``, ``psnr_u``, ``psnr_v`` (PSNR of the 4:2:0
  planes after the anchors' BT.709 conversion), ``psnr_yuv`` = (6 Y + U + V) / 8
  (mean of per-frame values) and ``psnr_yuv_pooled``; ``verify_decode_seconds``:
  the second decode of the determinism check (NULL: not re-decoded).
* ``anchor_results``: the same YUV PSNRs, on the decoder's own planes.
* ``scores``: ``reliable`` (overlap at least ``min_overlap``), ``min_overlap``,
  ``raw_bd_rate`` (the figure whatever the overlap; ``bd_rate`` is NULL when
  unreliable, so it is never fitness).

All nullable: rows from before this revision did not measure them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_YUV = ("psnr_y420", "psnr_u", "psnr_v", "psnr_yuv")


def upgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        for name in (*_YUV, "psnr_yuv_pooled", "verify_decode_seconds"):
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    with op.batch_alter_table("anchor_results", schema=None) as batch_op:
        for name in _YUV:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reliable", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("min_overlap", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("raw_bd_rate", sa.Float(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_scores_raw_bd_rate_finite"),
            "(raw_bd_rate IS NULL OR (raw_bd_rate > -100 AND raw_bd_rate < 1e9))",
        )


def downgrade() -> None:
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_scores_raw_bd_rate_finite"), type_="check")
        batch_op.drop_column("raw_bd_rate")
        batch_op.drop_column("min_overlap")
        batch_op.drop_column("reliable")
    with op.batch_alter_table("anchor_results", schema=None) as batch_op:
        for name in reversed(_YUV):
            batch_op.drop_column(name)
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        for name in reversed((*_YUV, "psnr_yuv_pooled", "verify_decode_seconds")):
            batch_op.drop_column(name)
