"""managers' public answers to what visitors said ("you said, we did")

A manager answers a centre's low-scoring month, or one factor of it, with what was
done; the centre's public page and the open data show it beside the figures that
prompted it (issue 28).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import collector.models

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("centre_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("factor", sa.String(length=16), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("lang", sa.String(length=2), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("created_at", collector.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["centre_id"], ["centres.id"], name=op.f("fk_answers_centre_id_centres")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answers")),
    )
    op.create_index("ix_answers_centre_period", "answers", ["centre_id", "period_start"])


def downgrade() -> None:
    op.drop_index("ix_answers_centre_period", table_name="answers")
    op.drop_table("answers")
