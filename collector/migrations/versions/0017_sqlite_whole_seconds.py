"""SQLite: one text form for every stored time

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01

The fast ingest path wrote times at a whole second as ``2026-11-20 09:01:00`` where
SQLAlchemy writes ``2026-11-20 09:01:00.000000``; SQLite compares the text, so such a
row fell outside a range that starts exactly at its own time. Written rows get the
full form; PostgreSQL stores real timestamps and has nothing to change.
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

#: The tables the fast path writes, and their time columns.
COLUMNS = {
    "events": ("pressed_at", "received_at", "pressed_lo", "pressed_hi"),
    "quarantine": ("first_seen", "last_seen", "resolved_at"),
    "device_state": ("last_seen", "status_at", "health_at"),
    "stream_state": ("first_seen", "last_seen"),
    "daily_aggregates": ("changed_at",),
    "channel_aggregates": ("changed_at",),
    "factor_aggregates": ("changed_at",),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, cols in COLUMNS.items():
        sets = ", ".join(
            f"{c} = CASE WHEN length({c}) = 19 THEN {c} || '.000000' ELSE {c} END" for c in cols
        )
        where = " OR ".join(f"length({c}) = 19" for c in cols)
        op.execute(f"UPDATE {table} SET {sets} WHERE {where}")


def downgrade() -> None:
    pass  # the full form is what SQLAlchemy reads and writes anyway
