"""online ratings carry their proof of a visit; visit windows have one-time codes

A phone rating counts only with a proof that a visit happened at the desk (issue 25):
the code on the desk's screen or a queue system's visit window code. Submissions say
which proof they had; windows keep their code and who opened them; wrong codes are
counted per (daily-keyed) address so that codes cannot be guessed.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import collector.models

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("online_submissions") as batch:
        batch.add_column(
            sa.Column("proof", sa.String(length=16), nullable=False, server_default="card")
        )
    with op.batch_alter_table("online_windows") as batch:
        batch.add_column(sa.Column("code", sa.String(length=12), nullable=True))
        batch.add_column(sa.Column("armed_by", sa.String(length=100), nullable=True))
    op.create_table(
        "online_code_failures",
        sa.Column("id", collector.models.BigId, autoincrement=True, nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("address_key", sa.String(length=32), nullable=False),
        sa.Column("at", collector.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_online_code_failures")),
    )
    op.create_index(
        "ix_online_code_failures_address", "online_code_failures", ["address_key", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_online_code_failures_address", table_name="online_code_failures")
    op.drop_table("online_code_failures")
    with op.batch_alter_table("online_windows") as batch:
        batch.drop_column("armed_by")
        batch.drop_column("code")
    with op.batch_alter_table("online_submissions") as batch:
        batch.drop_column("proof")
