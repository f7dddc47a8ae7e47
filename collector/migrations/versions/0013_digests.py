"""scheduled digests: a recipient's choice and their outbox

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from collector.models import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alert_recipients") as batch:
        batch.add_column(sa.Column("digest", sa.String(8), nullable=True))
    op.create_table(
        "report_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "recipient_id", sa.Integer(), sa.ForeignKey("alert_recipients.id"), nullable=False
        ),
        sa.Column("batch_key", sa.String(100), nullable=False, unique=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("send_key", sa.String(120), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("pending_since", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("sent_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_report_deliveries_state", "report_deliveries", ["state"])


def downgrade() -> None:
    op.drop_table("report_deliveries")
    with op.batch_alter_table("alert_recipients") as batch:
        batch.drop_column("digest")
