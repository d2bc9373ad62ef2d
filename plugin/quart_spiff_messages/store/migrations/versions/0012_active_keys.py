"""Active keys: the correlation keys held by active instances of processes that start one instance per key.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiff_active_key",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("process_key", sa.String(512), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("values_digest", sa.String(40), nullable=False),
        sa.Column("values_json", sa.Text, nullable=False),
        sa.Column("process_instance_id", sa.Integer,
                  sa.ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_spiff_active_key_process_instance_id", "spiff_active_key", ["process_instance_id"])
    op.create_index("ux_spiff_active_key", "spiff_active_key", ["process_key", "key_name", "values_digest"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ux_spiff_active_key", "spiff_active_key")
    op.drop_index("ix_spiff_active_key_process_instance_id", "spiff_active_key")
    op.drop_table("spiff_active_key")
