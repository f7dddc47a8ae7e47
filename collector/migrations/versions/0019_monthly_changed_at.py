"""monthly cells say when they last changed

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01

The aggregate feed reports when each row last changed (``updated_at``), which only the
daily cells knew, so a year by month read every daily cell (~250 per cell). The monthly
cells now keep ``changed_at`` too (the newest of their days), and the feed reads whole
months from them. The months are made again from the daily cells, as 0015 made them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import collector.models

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

COUNTERS = ("n1", "n2", "n3", "n4", "n5", "n", "excluded")
KEYS = ("centre_id", "employee_id", "service_id", "scale")


def upgrade() -> None:
    bind = op.get_bind()
    op.execute("DELETE FROM monthly_aggregates")
    with op.batch_alter_table("monthly_aggregates", recreate="always") as batch:
        batch.add_column(
            sa.Column("changed_at", collector.models.UTCDateTime(timezone=True), nullable=False)
        )
    daily = sa.table(
        "daily_aggregates",
        *(sa.column(c) for c in KEYS),
        sa.column("day", sa.Date()),
        sa.column("changed_at"),
        *(sa.column(c, sa.Integer()) for c in COUNTERS),
    )
    monthly = sa.table(
        "monthly_aggregates",
        *(sa.column(c) for c in ("month", *KEYS, *COUNTERS, "changed_at")),
    )
    if bind.dialect.name == "postgresql":
        month: Any = sa.cast(sa.func.date_trunc("month", daily.c.day), sa.Date())
    else:
        month = sa.func.date(daily.c.day, "start of month")
    keys = [daily.c[k] for k in KEYS]
    bind.execute(
        sa.insert(monthly).from_select(
            ["month", *KEYS, *COUNTERS, "changed_at"],
            sa.select(
                month,
                *keys,
                *(sa.func.sum(daily.c[c]) for c in COUNTERS),
                sa.func.max(daily.c.changed_at),
            ).group_by(month, *keys),
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("monthly_aggregates") as batch:
        batch.drop_column("changed_at")
