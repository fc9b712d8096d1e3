"""The process that runs a drill: pid, boot id and start time, to tell abandoned drills.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ("pid", "boot_id", "process_start_ticks")


def upgrade() -> None:
    # Nullable: drills recorded before this revision do not know their process.
    op.add_column("drills", sa.Column("pid", sa.Integer))
    op.add_column("drills", sa.Column("boot_id", sa.String(64)))
    op.add_column("drills", sa.Column("process_start_ticks", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("drills") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
