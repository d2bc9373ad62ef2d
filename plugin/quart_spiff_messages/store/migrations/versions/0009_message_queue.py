"""The queue of messages accepted asynchronously and not routed yet.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiff_message_queue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_instance_id", sa.Integer,
                  sa.ForeignKey("spiff_message_instance.id", ondelete="CASCADE"), nullable=False, unique=True),
        sa.Column("order_key", sa.String(512), nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_spiff_message_queue_order", "spiff_message_queue", ["order_key", "id"])


def downgrade() -> None:
    op.drop_index("ix_spiff_message_queue_order", "spiff_message_queue")
    op.drop_table("spiff_message_queue")
