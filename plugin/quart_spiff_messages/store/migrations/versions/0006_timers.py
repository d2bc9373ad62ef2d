"""Durable timers: a row per timer an instance waits at (indexed on due time), and the schedules of timer start
events.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiff_timer",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("process_instance_id", sa.Integer,
                  sa.ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("timer_type", sa.String(16), nullable=False),
        sa.Column("due_at", sa.Double, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_spiff_timer_process_instance_id", "spiff_timer", ["process_instance_id"])
    op.create_index("ix_spiff_timer_due_at", "spiff_timer", ["due_at"])
    op.create_index("ux_spiff_timer_task", "spiff_timer", ["process_instance_id", "task_id", "element_id"],
                    unique=True)
    op.create_table(
        "spiff_timer_start",
        sa.Column("process_key", sa.String(512), primary_key=True),
        sa.Column("element_id", sa.String(255), primary_key=True),
        sa.Column("expression", sa.Text, nullable=False),
        sa.Column("next_due", sa.Double, nullable=True),
        sa.Column("cycles_left", sa.Integer, nullable=False),
        sa.Column("interval_seconds", sa.Double, nullable=False),
        sa.Column("started", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_spiff_timer_start_next_due", "spiff_timer_start", ["next_due"])


def downgrade() -> None:
    op.drop_index("ix_spiff_timer_start_next_due", "spiff_timer_start")
    op.drop_table("spiff_timer_start")
    op.drop_index("ux_spiff_timer_task", "spiff_timer")
    op.drop_index("ix_spiff_timer_due_at", "spiff_timer")
    op.drop_index("ix_spiff_timer_process_instance_id", "spiff_timer")
    op.drop_table("spiff_timer")
