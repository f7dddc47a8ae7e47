"""forwarding knows what the M&E IS holds, why a batch failed, and full re-sends

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forward_batches") as batch:
        batch.add_column(sa.Column("problem", sa.String(16), nullable=True))
        batch.add_column(sa.Column("remote", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("full_send", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("forward_batches") as batch:
        batch.drop_column("full_send")
        batch.drop_column("remote")
        batch.drop_column("problem")
