"""monthly cells and hourly counts beside the daily cells; estimate-dated presses indexed

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

A year's pages read ~12 monthly rows per cell instead of ~250 daily ones, and the hour x
weekday picture reads hourly counts instead of grouping every press. Both are filled here
from what is kept (monthly from the daily cells, hourly from the events), in one
``INSERT ... SELECT`` each.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COUNTERS = ("n1", "n2", "n3", "n4", "n5", "n", "excluded")
UNCERTAIN_SQL = "(flags & 16) <> 0"
BURST = 1
STATISTICS_SQL = "CREATE STATISTICS IF NOT EXISTS st_events_uncertain ON ((flags & 16)) FROM events"


def upgrade() -> None:
    op.create_table(
        "monthly_aggregates",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("centre_id", sa.Integer(), nullable=False),
        sa.Column("employee_id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        *(sa.Column(c, sa.Integer(), nullable=False) for c in COUNTERS),
        sa.PrimaryKeyConstraint(
            "month", "centre_id", "employee_id", "service_id", "scale",
            name=op.f("pk_monthly_aggregates"),
        ),
    )  # fmt: skip
    op.create_index(
        "ix_monthly_aggregates_centre_month", "monthly_aggregates", ["centre_id", "month"]
    )
    op.create_table(
        "hourly_counts",
        sa.Column("centre_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("utc_hour", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("centre_id", "day", "utc_hour", name=op.f("pk_hourly_counts")),
    )
    op.create_index(
        "ix_events_uncertain",
        "events",
        ["centre_id", "day"],
        postgresql_where=sa.text(UNCERTAIN_SQL),
        sqlite_where=sa.text(UNCERTAIN_SQL),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Without it the planner guesses that most presses match the predicate and
        # never picks the partial index (measured: 10.7 ms -> 0.06 ms at 10 M events).
        op.execute(STATISTICS_SQL)
    daily = sa.table(
        "daily_aggregates",
        *(sa.column(c) for c in ("centre_id", "employee_id", "service_id", "scale")),
        sa.column("day", sa.Date()),
        *(sa.column(c, sa.Integer()) for c in COUNTERS),
    )
    monthly = sa.table(
        "monthly_aggregates",
        *(sa.column(c) for c in ("month", "centre_id", "employee_id", "service_id", "scale")),
        *(sa.column(c) for c in COUNTERS),
    )
    if bind.dialect.name == "postgresql":
        month: Any = sa.cast(sa.func.date_trunc("month", daily.c.day), sa.Date())
    else:
        month = sa.func.date(daily.c.day, "start of month")
    keys = (daily.c.centre_id, daily.c.employee_id, daily.c.service_id, daily.c.scale)
    bind.execute(
        sa.insert(monthly).from_select(
            ["month", "centre_id", "employee_id", "service_id", "scale", *COUNTERS],
            sa.select(month, *keys, *(sa.func.sum(daily.c[c]) for c in COUNTERS)).group_by(
                month, *keys
            ),
        )
    )
    events = sa.table(
        "events",
        sa.column("centre_id"),
        sa.column("day"),
        sa.column("pressed_at", sa.DateTime()),
        sa.column("type"),
        sa.column("flags", sa.Integer()),
    )
    hour = sa.cast(sa.extract("hour", events.c.pressed_at), sa.Integer())
    bind.execute(
        sa.insert(
            sa.table(
                "hourly_counts", *(sa.column(c) for c in ("centre_id", "day", "utc_hour", "n"))
            )
        ).from_select(
            ["centre_id", "day", "utc_hour", "n"],
            sa.select(events.c.centre_id, events.c.day, hour, sa.func.count())
            .where(
                events.c.type == "rating",
                events.c.centre_id.is_not(None),
                events.c.flags.op("&")(BURST) == 0,
            )
            .group_by(events.c.centre_id, events.c.day, hour),
        )
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_events_uncertain")
    op.drop_index("ix_events_uncertain", table_name="events")
    op.drop_table("hourly_counts")
    op.drop_index("ix_monthly_aggregates_centre_month", table_name="monthly_aggregates")
    op.drop_table("monthly_aggregates")
