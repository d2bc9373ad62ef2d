"""Initial schema: process instances, spec versions, subscriptions, message instances and their keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spiff_process_spec",
        sa.Column("process_key", sa.String(512), primary_key=True),
        sa.Column("spec_version", sa.String(32), primary_key=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "spiff_process_instance",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("process_key", sa.String(512), nullable=False, index=True),
        sa.Column("process_id", sa.String(255), nullable=False),
        sa.Column("process_group", sa.String(255), nullable=False),
        sa.Column("spec_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("correlations", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "spiff_subscription",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("process_instance_id", sa.Integer(),
                  sa.ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("message_name", sa.String(255), nullable=False),
        sa.Column("group_path", sa.String(512), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("values_digest", sa.String(40), nullable=False),
        sa.Column("values_json", sa.Text(), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("element_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_spiff_subscription_lookup", "spiff_subscription",
                    ["message_name", "key_name", "values_digest", "id"])
    op.create_table(
        "spiff_message_instance",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("message_type", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("correlation_keys", sa.JSON(), nullable=True),
        sa.Column("process_instance_id", sa.Integer(), nullable=True, index=True),
        sa.Column("counterpart_id", sa.Integer(), nullable=True),
        sa.Column("message_instance_uuid", sa.String(40), nullable=True, unique=True),
        sa.Column("failure_cause", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.Double(), nullable=True, index=True),
        sa.Column("created_at", sa.Double(), nullable=False, index=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_spiff_message_instance_status_name", "spiff_message_instance", ["status", "name", "id"])
    op.create_table(
        "spiff_message_key",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("message_instance_id", sa.Integer(),
                  sa.ForeignKey("spiff_message_instance.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("message_name", sa.String(255), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column("values_digest", sa.String(40), nullable=False),
    )
    op.create_index("ix_spiff_message_key_lookup", "spiff_message_key",
                    ["message_name", "key_name", "values_digest"])


def downgrade() -> None:
    op.drop_table("spiff_message_key")
    op.drop_table("spiff_message_instance")
    op.drop_table("spiff_subscription")
    op.drop_table("spiff_process_instance")
    op.drop_table("spiff_process_spec")
