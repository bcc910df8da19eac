"""The SQLite engine of the run database (WAL, pragmas, transaction modes), its migrations, and the
translation of SQLite's failures (locked, full, read-only, corrupt) into errors a user can act on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, ExceptionContext

from idealab.store.schema import StoreError, alembic_config, readonly_uri, translate

BEGIN_MODE = "idealab_begin"  # execution option read by the "begin" listener


def _on_connect(dbapi_conn: Any, _record: Any, busy_ms: int) -> None:
    # Take transaction control from the sqlite3 module so that the "begin" listener decides BEGIN's mode.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", f"busy_timeout={busy_ms}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_connect_readonly(dbapi_conn: Any, _record: Any, busy_ms: int) -> None:
    # No journal_mode pragma: setting it is a write. query_only makes any write an error, whatever the URI.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in ("query_only=ON", f"busy_timeout={busy_ms}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_begin(conn: Connection) -> None:
    # Writes take the write lock up front (IMMEDIATE): a deferred read-then-write transaction could fail
    # with SQLITE_BUSY at the upgrade without ever waiting on busy_timeout.
    mode = conn.get_execution_options().get(BEGIN_MODE, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _listen(engine: Engine, db: Path) -> None:
    def on_error(context: ExceptionContext) -> None:
        fault = translate(context.original_exception, db)
        if fault is not None:
            raise fault from context.original_exception

    event.listen(engine, "handle_error", on_error)


def make_engine(db: Path, busy_timeout_s: float) -> Engine:
    url = URL.create("sqlite", database=str(db))
    engine = create_engine(url, connect_args={"check_same_thread": False})
    busy_ms = int(busy_timeout_s * 1000)
    event.listen(engine, "connect", lambda conn, record: _on_connect(conn, record, busy_ms))
    event.listen(engine, "begin", _on_begin)
    _listen(engine, db)
    return engine


def make_readonly_engine(db: Path, busy_timeout_s: float, immutable: bool) -> Engine:
    """An engine that can only read. `immutable`: for a database on a read-only disk with no WAL to
    replay (SQLite then needs neither locks nor the -shm file it could not create there)."""
    uri = readonly_uri(db, immutable)
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
    busy_ms = int(busy_timeout_s * 1000)
    event.listen(engine, "connect", lambda conn, record: _on_connect_readonly(conn, record, busy_ms))
    event.listen(engine, "begin", _on_begin)
    _listen(engine, db)
    return engine


def migrate(writer: Engine, path: Path) -> None:
    """Upgrade the schema to the newest Alembic revision, in one write transaction."""
    from alembic import command
    from alembic.util.exc import CommandError

    cfg = alembic_config()
    with writer.begin() as conn:
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except CommandError as exc:
            raise StoreError(f"{path}: cannot migrate ({exc}); is it from a newer idealab?") from exc


def driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy one (for what `idealab.store.schema` reads)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw
