"""Who and how often (client, owner, tags, every) and the RTO projection, per result.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    sa.Column("client", sa.String(128), nullable=False, server_default=""),
    sa.Column("owner", sa.String(128), nullable=False, server_default=""),
    sa.Column("tags", sa.Text, nullable=False, server_default=""),
    sa.Column("every_seconds", sa.Float),
    sa.Column("full_bytes", sa.BigInteger),
    sa.Column("throughput_bytes_per_second", sa.Float),
    sa.Column("projected_rto_seconds", sa.Float),
    sa.Column("rto_applies_to", sa.String(16), nullable=False, server_default="restored"),
)


def upgrade() -> None:
    # Results recorded before this revision have no client, owner or tags (""), and no
    # interval: views take the interval from the scenario file, or the default.
    for column in COLUMNS:
        op.add_column("results", column)
    op.create_index("ix_results_client", "results", ["client"])
    op.create_index("ix_results_scenario_started", "results", ["scenario", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_results_scenario_started", "results")
    op.drop_index("ix_results_client", "results")
    with op.batch_alter_table("results") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column.name)
