"""How a `Store` reaches its database: the default URL, and an engine set up for SQLite's concurrency rules.

SQLite is the default backend and the one the concurrency rules are written for:

* WAL journal, so the page's reads never wait for a writer and a writer never waits for readers (an in-memory
  database, having no file, is one connection instead, lent to one thread at a time: everyone waits their turn);
* `busy_timeout`, so a writer waits for another writer instead of failing at once; past it the store raises
  `StoreBusy` and, because the transaction rolled back, nothing was half-saved;
* foreign keys on (SQLite leaves them off per connection);
* SQLAlchemy emits BEGIN itself (the sqlite3 driver's legacy mode would run SELECTs outside the transaction):
  every write verb opens `BEGIN IMMEDIATE`, taking the write lock before it reads, so its checks ("already rated?")
  and its inserts see one consistent database and a lock wait goes through the busy handler instead of failing
  with a stale snapshot. The UNIQUE constraints stay the last word for any other backend.

The first three are set on every new connection (`make_engine`); the mode of each BEGIN is read from the execution
option `db.migrate.BEGIN_OPTION`, which the store's write transactions and the migration set to "IMMEDIATE".
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import QueuePool

from .migrate import BEGIN_OPTION

HOME_ENV = "PERSONA_STUDIO_HOME"
DB_ENV = "PERSONA_STUDIO_DB"
DB_FILENAME = "studio.sqlite"
DEFAULT_BUSY_TIMEOUT_MS = 15_000

MSG_BUSY = "the database is busy (another writer holds it); nothing was saved — submit again"
MSG_CROWDED = "the database is busy (every connection is in use); nothing was saved — submit again"
MSG_UNAVAILABLE = "the database cannot be reached right now; nothing was saved — try again in a moment"


class StoreBusy(RuntimeError):
    """The database could not serve the request now, and retrying later may succeed: SQLite stayed locked past the
    busy timeout, or the database server cannot be reached (down or restarting, a dropped connection). The
    transaction rolled back, so nothing was saved: retry. The original error is the exception's `__cause__` (and
    is logged: its text may name hosts, so it is not in the message). A permanent fault (a read-only or full disk,
    a missing table) is not this: it stays the driver's error."""


# PostgreSQL SQLSTATEs of a server that cannot serve now: class 08 (connection exceptions), 57P01-57P03 (admin or
# crash shutdown, cannot connect now) and 3D000 (the database does not exist, as while it is being recreated)
_UNREACHABLE = ("08", "57P01", "57P02", "57P03", "3D000")


def _unreachable(err: OperationalError) -> bool:
    """Whether the error says the database cannot be reached (rather than that it refused the statement)."""
    if err.connection_invalidated:
        return True
    if not hasattr(err.orig, "sqlstate"):  # sqlite3: locking is its only passing condition
        return False
    state = err.orig.sqlstate
    return state is None or state.startswith(_UNREACHABLE)  # None: a client-side failure to connect


def default_url() -> str:
    """`$PERSONA_STUDIO_DB` if set, else SQLite at `<data home>/studio.sqlite`.

    The data home matches `steering.settings.data_home` (`$PERSONA_STUDIO_HOME`, else `$XDG_CACHE_HOME` or
    `~/.cache`, then `persona-studio`); it is computed here rather than imported because `db/` must not import
    `steering/`. Read at call time so tests can point it elsewhere."""
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    if os.environ.get(HOME_ENV):
        home = Path(os.environ[HOME_ENV]).expanduser()
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "persona-studio"
    return URL.create("sqlite", database=str(home / DB_FILENAME)).render_as_string()


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or (database.startswith("file:") and "mode=memory" in database)


def make_engine(url: URL, busy_timeout_ms: int) -> Engine:
    """An engine for `url`; for SQLite, with the connection settings and the BEGIN listener described above."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url)
    memory = _is_memory(url)
    if memory:
        # One connection, or each session would see its own empty database; lent to one thread at a time (a pool of
        # one that never grows): two threads' transactions on one sqlite3 connection would interleave ("cannot
        # start a transaction within a transaction"). A thread waits for it up to the busy timeout, like a writer.
        engine = create_engine(url, poolclass=QueuePool, pool_size=1, max_overflow=0,
                               pool_timeout=busy_timeout_ms / 1000, connect_args={"check_same_thread": False})
    else:
        database = url.database or ""
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Pooled connections move between threads (Gradio workers), one user at a time.
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": busy_timeout_ms / 1000})

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below), not the driver
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            if not memory:
                _enable_wal(cursor, busy_timeout_ms / 1000)
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine


def _enable_wal(cursor: sqlite3.Cursor, timeout_s: float) -> None:
    """Switch a new connection's file to WAL, waiting out another connection that holds the file meanwhile.

    Switching needs an exclusive lock, and SQLite can answer "database is locked" at once, without the busy wait,
    when another process is switching the same fresh file or writing it; two studio processes that create the
    file at the same moment hit exactly that. Retried with a short backoff up to the busy timeout, then raised
    (the store turns it into `StoreBusy`)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err).lower() or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextmanager
def translate_busy(log: bool = True) -> Iterator[None]:
    """Turn passing faults into `StoreBusy`: no connection free within the pool's timeout (an in-memory store's one
    connection, or a server pool's all, in use) as crowded; SQLite's "database is locked" (after the busy timeout)
    as busy; a server that cannot be reached (`_unreachable`) as unreachable. The first and last are logged unless
    `log` is false (opening a store: whoever opens it reports the cause). The caller's transaction has already
    rolled back (or never began) when this runs, which is why the message can promise nothing was saved."""
    try:
        yield
    except PoolTimeout as err:
        if log:
            logging.getLogger(__name__).warning("no database connection free: %s", " ".join(str(err).split()))
        raise StoreBusy(MSG_CROWDED) from err
    except OperationalError as err:
        text = str(err.orig).lower()
        if "locked" in text or "busy" in text:
            raise StoreBusy(MSG_BUSY) from err
        if not _unreachable(err):
            raise
        if log:
            logging.getLogger(__name__).warning("database unavailable: %s", " ".join(str(err.orig).split()))
        raise StoreBusy(MSG_UNAVAILABLE) from err
