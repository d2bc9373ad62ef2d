"""The event feed indexed by instance: the console's instance page reads an instance's latest events.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_spiff_event_instance", "spiff_event", ["process_instance_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_spiff_event_instance", table_name="spiff_event")
