"""The event feed without a lock: each event row carries the id of the transaction that wrote it.

Readers see only rows of transactions older than every transaction still in flight (PostgreSQL), in
(transaction, id) order, so the feed needs no lock that every writer takes. Rows written before this revision keep
0 and come first, in id order (the order the old feed lock gave them).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("spiff_event", sa.Column("xact", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index("ix_spiff_event_xact_id", "spiff_event", ["xact", "id"])


def downgrade() -> None:
    op.drop_index("ix_spiff_event_xact_id", "spiff_event")
    op.drop_column("spiff_event", "xact")
