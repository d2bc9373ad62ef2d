"""Service calls: a row per service task waiting for its result, claimed by workers with a lease.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiff_service_call",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("process_instance_id", sa.Integer,
                  sa.ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("operator", sa.String(255), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("lease_until", sa.Double, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_spiff_service_call_process_instance_id", "spiff_service_call", ["process_instance_id"])
    op.create_index("ix_spiff_service_call_next_attempt_at", "spiff_service_call", ["next_attempt_at"])
    op.create_index("ux_spiff_service_call_task", "spiff_service_call", ["process_instance_id", "task_id"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ux_spiff_service_call_task", "spiff_service_call")
    op.drop_index("ix_spiff_service_call_next_attempt_at", "spiff_service_call")
    op.drop_index("ix_spiff_service_call_process_instance_id", "spiff_service_call")
    op.drop_table("spiff_service_call")
