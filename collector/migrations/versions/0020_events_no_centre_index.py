"""drop the index of events led by the centre: no query reads events by centre any more

The dashboard's hour x weekday picture reads ``hourly_counts`` and its estimate-dated
days the partial ``ix_events_uncertain``; every other reader of ``events`` goes by day,
by unit and stream, or by id. The index cost every insert its share (issue 15: the
events ``INSERT`` is most of PostgreSQL's ingest time).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_centre_day", table_name="events")


def downgrade() -> None:
    op.create_index(
        "ix_events_centre_day",
        "events",
        ["centre_id", "day"],
        unique=False,
        postgresql_include=["pressed_at", "flags", "type"],
    )
