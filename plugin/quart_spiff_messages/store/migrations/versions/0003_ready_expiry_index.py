"""Index ready messages by expiry: each sweep batch seeks its rows instead of stepping over all expired ones.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_spiff_message_instance_status_expires", "spiff_message_instance", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_spiff_message_instance_status_expires", table_name="spiff_message_instance")
