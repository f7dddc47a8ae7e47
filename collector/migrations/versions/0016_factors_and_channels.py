"""assessment factors and channels: event columns, per-channel and per-factor cells

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

Every event stored so far came from a unit at a desk: its channel is ``counter``, and
the per-channel cells are the daily cells summed over employees. No factors existed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import collector.models

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

COUNTERS = ("n1", "n2", "n3", "n4", "n5", "n", "excluded")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(16), nullable=False, server_default="counter")
        )
        batch.add_column(sa.Column("rating_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("answers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("chosen_service", sa.String(32), nullable=True))
    op.create_table(
        "channel_aggregates",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("centre_id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        *(sa.Column(c, sa.Integer(), nullable=False) for c in COUNTERS),
        sa.Column("changed_at", collector.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "centre_id", "service_id", "channel", "scale",
            name=op.f("pk_channel_aggregates"),
        ),
    )  # fmt: skip
    op.create_index("ix_channel_aggregates_centre_day", "channel_aggregates", ["centre_id", "day"])
    op.create_table(
        "factor_aggregates",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("centre_id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("factor", sa.String(16), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("excluded", sa.Integer(), nullable=False),
        sa.Column("changed_at", collector.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "centre_id", "service_id", "channel", "factor", "scale", "level",
            name=op.f("pk_factor_aggregates"),
        ),
    )  # fmt: skip
    op.create_index("ix_factor_aggregates_centre_day", "factor_aggregates", ["centre_id", "day"])
    op.create_table(
        "online_submissions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", collector.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("address_key", sa.String(32), nullable=False),
        sa.Column("browser_key", sa.String(32), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_online_submissions")),
        sa.UniqueConstraint("nonce", name=op.f("uq_online_submissions_nonce")),
        sa.UniqueConstraint("device", "first_seq", name="uq_online_submissions_seq"),
    )
    op.create_index(
        "ix_online_submissions_browser", "online_submissions", ["browser_key", "created_at"]
    )
    op.create_index(
        "ix_online_submissions_address", "online_submissions", ["address_key", "created_at"]
    )
    op.create_index("ix_online_submissions_device", "online_submissions", ["device", "created_at"])
    op.create_table(
        "online_windows",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("opened_at", collector.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closes_at", collector.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_online_windows")),
    )
    op.create_index("ix_online_windows_device", "online_windows", ["device", "opened_at"])
    daily = sa.table(
        "daily_aggregates",
        *(sa.column(c) for c in ("day", "centre_id", "service_id", "scale", "changed_at")),
        *(sa.column(c, sa.Integer()) for c in COUNTERS),
    )
    channel = sa.table(
        "channel_aggregates",
        *(sa.column(c) for c in ("day", "centre_id", "service_id", "channel", "scale")),
        *(sa.column(c) for c in (*COUNTERS, "changed_at")),
    )
    keys = (daily.c.day, daily.c.centre_id, daily.c.service_id, daily.c.scale)
    op.get_bind().execute(
        sa.insert(channel).from_select(
            ["day", "centre_id", "service_id", "channel", "scale", *COUNTERS, "changed_at"],
            sa.select(
                daily.c.day,
                daily.c.centre_id,
                daily.c.service_id,
                sa.literal("counter", sa.String()),
                daily.c.scale,
                *(sa.func.sum(daily.c[c]) for c in COUNTERS),
                sa.func.max(daily.c.changed_at),
            ).group_by(*keys),
        )
    )


def downgrade() -> None:
    op.drop_index("ix_online_windows_device", table_name="online_windows")
    op.drop_table("online_windows")
    for name in ("browser", "address", "device"):
        op.drop_index(f"ix_online_submissions_{name}", table_name="online_submissions")
    op.drop_table("online_submissions")
    op.drop_index("ix_factor_aggregates_centre_day", table_name="factor_aggregates")
    op.drop_table("factor_aggregates")
    op.drop_index("ix_channel_aggregates_centre_day", table_name="channel_aggregates")
    op.drop_table("channel_aggregates")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("chosen_service")
        batch.drop_column("answers")
        batch.drop_column("rating_seq")
        batch.drop_column("channel")
