"""One subscription row per wait: lets the store upsert an instance's waits without reading them first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ux_spiff_subscription_wait", "spiff_subscription",
                    ["process_instance_id", "task_id", "message_name", "key_name", "values_digest"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_spiff_subscription_wait", table_name="spiff_subscription")
