"""Alembic environment: migrations run on the connection that `Store.open` hands over.

No alembic.ini: `idealab.store.store.migrate` builds the Config in code and puts an open connection in
`config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from idealab.store.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("idealab migrations run only through idealab.store (config.attributes['connection'])")

# render_as_batch: SQLite cannot ALTER most things, so later revisions rebuild tables in batch mode.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
