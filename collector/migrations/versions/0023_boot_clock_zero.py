"""where each unit's boot clock stood at zero: the lowest of every message's evidence

An unsynced unit's press is dated by its monotonic clock. Every message of a boot heard
at time R with monotonic time m (a heartbeat's ``mono_ms``, an event's ``sent_mono_ms``)
says the boot's zero lies at most at R − m: a delay on the way only makes it later. The
collector keeps the lowest such value per unit (with its boot and when it was last
confirmed) so that one late message cannot date a press late (dating rule 2).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_state") as batch:
        batch.add_column(sa.Column("clock_boot", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("clock_zero_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("clock_heard_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_state") as batch:
        batch.drop_column("clock_heard_ms")
        batch.drop_column("clock_zero_ms")
        batch.drop_column("clock_boot")
