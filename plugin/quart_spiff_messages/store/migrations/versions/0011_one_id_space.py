"""One id space for messages and waits: a wait listed as a ``receive`` row keeps its id when it ends.

Subscription rows take their ids from the messages' sequence on PostgreSQL (on SQLite the store hands out ids of
both tables from one counter, ``Tx.fresh_ids``). The rows already indexed are renumbered into that space, in their
order (their order is the waiters' place in line), so none of them shares an id with a message.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SEQUENCE = "spiff_message_instance_id_seq"


def upgrade() -> None:
    bind = op.get_bind()
    ids = [int(i) for i in bind.execute(sa.text("SELECT id FROM spiff_subscription ORDER BY id")).scalars()]
    if bind.dialect.name == "postgresql":
        op.execute(f"ALTER TABLE spiff_subscription ALTER COLUMN id SET DEFAULT nextval('{SEQUENCE}')")
        if ids:
            start = int(bind.execute(sa.text(f"SELECT nextval('{SEQUENCE}')")).scalar_one())
            bind.execute(sa.text(f"SELECT setval('{SEQUENCE}', :last)"), {"last": start + len(ids)})
            _renumber(ids, start)
    elif ids:
        last = bind.execute(sa.text("SELECT max(id) FROM spiff_message_instance")).scalar_one() or 0
        _renumber(ids, max(int(last), ids[-1]) + 1)


def _renumber(ids: list[int], start: int) -> None:
    """Move ids ``ids`` (ascending) to ``start``, ``start + 1``, ...: through negatives, so no two rows ever meet."""
    bind = op.get_bind()
    bind.execute(sa.text("UPDATE spiff_subscription SET id = -id"))
    bind.execute(sa.text("UPDATE spiff_subscription SET id = :new WHERE id = :old"),
                 [{"old": -old, "new": start + n} for n, old in enumerate(ids)])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE spiff_subscription ALTER COLUMN id SET DEFAULT nextval('spiff_subscription_id_seq')")
        op.execute("SELECT setval('spiff_subscription_id_seq',"
                   " (SELECT coalesce(max(id), 0) + 1 FROM spiff_subscription),"
                   " false)")
