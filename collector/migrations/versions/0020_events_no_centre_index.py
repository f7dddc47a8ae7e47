"""events: the index led by the centre dropped, a partial index of the follow-up answers

No query reads events by centre any more.
The dashboard's hour x weekday picture reads ``hourly_counts`` and its estimate-dated
days the partial ``ix_events_uncertain``; every other reader of ``events`` goes by day,
by unit and stream, or by id. The index cost every insert its share (issue 15: the
events ``INSERT`` is most of PostgreSQL's ingest time).

A rebuild's step read the follow-up answers (``factors`` events) of its days through
the index by day, so it visited every rating of the week as well (62 of ~500 ms a week
of a generated year); a partial index by day holds only the answers.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


FACTORS_SQL = "type = 'factors'"


def upgrade() -> None:
    op.drop_index("ix_events_centre_day", table_name="events")
    op.create_index(
        "ix_events_factors_day",
        "events",
        ["day"],
        unique=False,
        postgresql_where=sa.text(FACTORS_SQL),
        sqlite_where=sa.text(FACTORS_SQL),
    )


def downgrade() -> None:
    op.drop_index("ix_events_factors_day", table_name="events")
    op.create_index(
        "ix_events_centre_day",
        "events",
        ["centre_id", "day"],
        unique=False,
        postgresql_include=["pressed_at", "flags", "type"],
    )
