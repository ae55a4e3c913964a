"""Bring a database to this code's schema when a `Store` opens it, with Alembic and the revisions in `migrations/`.

What a database needs is decided inside a transaction that holds the database's migration lock, so two processes
opening the same fresh database cannot both create the tables: the second one waits, looks again and finds the first
one's work. On SQLite that lock is the write lock (BEGIN IMMEDIATE); on PostgreSQL, where BEGIN takes no lock and two
transactions would both see no tables and both run CREATE TABLE (the second failing on a duplicate key in the
catalog), it is a transaction-level advisory lock (`pg_advisory_xact_lock`), taken first in the migrating transaction
and released by its commit or rollback. Under READ COMMITTED the look after the lock sees what the first committed.

* no tables at all: every revision runs;
* our tables but no `alembic_version` (a file made by `create_all`, before migrations existed): revision 0001
  adopts it, creating only the tables it lacks, then the later revisions run;
* an older revision: the revisions after it run;
* a revision this code does not know (the file was opened by a newer Persona Studio): `SchemaTooNew`, and nothing
  is written, because this code cannot know what that revision changed.

No revision drops a table or a row. A database already at `HEAD` is recognised by one read without the migration
lock, so opening a store stays cheap and does not queue behind a busy writer.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

HEAD = "0002"  # the newest revision in migrations/versions (a test checks they agree)

# Execution option read by the store's SQLite "begin" listener: "IMMEDIATE" takes the write lock at BEGIN.
BEGIN_OPTION = "persona_studio_begin"

# The key of the PostgreSQL advisory lock that serialises migrations of one database (advisory locks belong to a
# database, so two databases on one server do not wait for each other): the bytes "PSmigrat" as a signed bigint.
PG_MIGRATION_LOCK = 0x50536D6967726174

_MIGRATIONS = Path(__file__).with_name("migrations")

# Alembic's `op` and `context` are module-level proxies inside the alembic package, installed for one run at a time;
# two threads migrating two databases at once would swap them under each other. Taken only while holding the
# database's migration lock and released before anything else is waited for, so it cannot deadlock with that lock.
_ALEMBIC_RUN = threading.Lock()


class SchemaTooNew(RuntimeError):
    """The database is at a schema revision this Persona Studio does not know: a newer version wrote it. Nothing
    was changed; upgrade Persona Studio (an older one cannot tell what that revision means for its queries)."""


@functools.lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    """The revisions, read from disk once per process: loading them is most of the cost of a migration, and the
    test suite opens hundreds of fresh in-memory stores. Loaded here, under the cache, so threads share a complete
    revision map instead of racing to fill it."""
    scripts = ScriptDirectory(str(_MIGRATIONS))
    head = scripts.get_current_head()
    if head != HEAD:
        raise RuntimeError(f"db.migrate.HEAD is {HEAD!r} but the newest revision in {_MIGRATIONS} is {head!r}")
    return scripts


@functools.lru_cache(maxsize=1)
def _known() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def upgrade(engine: Engine) -> None:
    """Migrate the database behind `engine` to `HEAD` (see the module docstring); a no-op if it is there already.

    Raises `SchemaTooNew` for a database written by a newer Persona Studio. On an engine made by `Store`, the
    migrating transaction begins IMMEDIATE on SQLite (the write lock first; a plain engine ignores the option); on
    PostgreSQL it takes the advisory lock first (`_lock_for_migration`)."""
    url = engine.url.render_as_string(hide_password=True)
    with engine.connect() as connection:
        with connection.begin():
            if not _behind(connection, url):
                return
        connection.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        with connection.begin():
            _lock_for_migration(connection)
            if _behind(connection, url):  # another process may have migrated while this one waited for the lock
                _migrate(connection)


def _lock_for_migration(connection: Connection) -> None:
    """On PostgreSQL, wait for the database's migration lock; it is held until the transaction ends. Elsewhere
    nothing: SQLite's BEGIN IMMEDIATE already took the write lock."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})


def _behind(connection: Connection, url: str) -> bool:
    """Whether the database is below `HEAD`; `SchemaTooNew` if it is at a revision this code does not know."""
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = sorted(set(current) - _known())
    if unknown:
        raise SchemaTooNew(f"the database {url} is at schema revision {', '.join(unknown)}, which this Persona Studio "
                           f"(schema {HEAD}) does not know: a newer version wrote it; upgrade Persona Studio to open "
                           f"it (nothing was changed)")
    return tuple(current) != (HEAD,)


def _migrate(connection: Connection) -> None:
    """Run the revisions from the database's current one to `HEAD` on `connection`, inside its open transaction
    (env.py neither connects nor commits: the caller's `with connection.begin()` does)."""
    scripts = _scripts()
    config = Config()
    config.attributes["connection"] = connection

    def steps(current: str, _context: MigrationContext) -> list[RevisionStep]:
        # What `alembic.command.upgrade` does (it calls this same private method), minus re-reading the revision
        # files on every call; the version is pinned in requirements.txt and the tests run it.
        return scripts._upgrade_revs(HEAD, current)

    with _ALEMBIC_RUN, EnvironmentContext(config, scripts, fn=steps, destination_rev=HEAD):
        scripts.run_env()
