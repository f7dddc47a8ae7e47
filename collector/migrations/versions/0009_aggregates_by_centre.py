"""an index of daily aggregates led by the centre

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_daily_aggregates_centre_day", "daily_aggregates", ["centre_id", "day"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_daily_aggregates_centre_day", table_name="daily_aggregates")
