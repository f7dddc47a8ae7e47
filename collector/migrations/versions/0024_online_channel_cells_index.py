"""the phone channel's cells found by day without reading every channel's

The ministry page shows, beside each centre's score, the share of it that came by
phone. The centres' totals are already on the page; only the ``online`` cells of the
period are read for the share, through this partial index (a year of every channel's
cells is some hundred thousand rows; the phone's are a few).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

ONLINE = sa.text("channel = 'online'")


def upgrade() -> None:
    op.create_index(
        "ix_channel_aggregates_online_day",
        "channel_aggregates",
        ["day"],
        postgresql_where=ONLINE,
        sqlite_where=ONLINE,
    )


def downgrade() -> None:
    op.drop_index("ix_channel_aggregates_online_day", table_name="channel_aggregates")
