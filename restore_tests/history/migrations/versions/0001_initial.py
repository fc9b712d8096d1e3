"""The first schema: drills, results, phases, checks.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("tool_version", sa.String(32), nullable=False),
        sa.Column("docker_version", sa.String(64)),
        sa.Column("started_at", sa.DateTime, nullable=False, index=True),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("drill_id", sa.Integer, sa.ForeignKey("drills.id"), nullable=False, index=True),
        sa.Column("scenario", sa.String(255), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("scenario_path", sa.Text, nullable=False),
        sa.Column("scenario_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False, index=True),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("snapshot_id", sa.String(128)),
        sa.Column("snapshot_time", sa.DateTime),
        sa.Column("source_version", sa.String(64)),
        sa.Column("files", sa.BigInteger),
        sa.Column("bytes", sa.BigInteger),
        sa.Column("rto_seconds", sa.Float),
        sa.Column("rto_target_seconds", sa.Float),
        sa.Column("rto_status", sa.String(16), nullable=False),
        sa.Column("rpo_seconds", sa.Float),
        sa.Column("rpo_target_seconds", sa.Float),
        sa.Column("rpo_status", sa.String(16), nullable=False),
        sa.Column("rpo_basis", sa.String(32), nullable=False),
        sa.Column("kept", sa.Text, nullable=False),
    )
    op.create_table(
        "phases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("result_id", sa.Integer, sa.ForeignKey("results.id"), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    op.create_table(
        "checks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("result_id", sa.Integer, sa.ForeignKey("results.id"), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("expected", sa.Text, nullable=False),
        sa.Column("observed", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("proves_data", sa.Boolean, nullable=False),
        sa.Column("seconds", sa.Float),
    )


def downgrade() -> None:
    for table in ("checks", "phases", "results", "drills"):
        op.drop_table(table)
