"""an index of events led by the centre (the dashboard's pictures of a period)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_events_centre_day",
        "events",
        ["centre_id", "day"],
        unique=False,
        postgresql_include=["pressed_at", "flags", "type"],
    )


def downgrade() -> None:
    op.drop_index("ix_events_centre_day", table_name="events")
