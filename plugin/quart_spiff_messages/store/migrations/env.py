"""Alembic environment: always driven by ``quart_spiff_messages.store.db.upgrade`` with an open connection."""

from alembic import context

from quart_spiff_messages.store.models import Base

VERSION_TABLE = "spiff_messages_alembic_version"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
