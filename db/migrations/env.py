"""Alembic's environment for Persona Studio: run the migrations on the connection `db.migrate.upgrade` hands over.

Only programmatic use is supported (there is no alembic.ini): the store decides when to migrate, inside a
transaction that already holds the database's migration lock (SQLite's write lock, PostgreSQL's advisory lock), so
this script must neither open its own connection nor commit. `begin_transaction()` sees that outer transaction and
leaves it to the caller.

`render_as_batch` makes autogenerate write `batch_alter_table` blocks, the form SQLite needs for any ALTER other than
ADD COLUMN.
"""

from __future__ import annotations

from alembic import context

from db.schema import Base

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("Persona Studio migrates through db.migrate.upgrade(engine), which passes a connection in "
                       "config.attributes['connection']; offline (--sql) mode and alembic.ini are not supported")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
