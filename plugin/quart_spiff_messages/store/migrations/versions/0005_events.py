"""The durable event feed: one row per change a host may react to, written in the change's own transaction.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiff_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("process_instance_id", sa.Integer, nullable=True),
        sa.Column("message_instance_id", sa.Integer, nullable=True),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_spiff_event_created_at", "spiff_event", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_spiff_event_created_at", "spiff_event")
    op.drop_table("spiff_event")
