"""A catalog generation: a reload asked of one process (SIGHUP, CLI, HTTP) reaches every worker on every host.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiff_catalog_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("requested_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spiff_catalog_generation")
