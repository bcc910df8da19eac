"""The SQLite engine of the run database (WAL, pragmas, transaction modes) and its migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BEGIN_MODE = "idealab_begin"  # execution option read by the "begin" listener


class StoreError(RuntimeError):
    """The database cannot be used (e.g. written by a newer idealab)."""


def _on_connect(dbapi_conn: Any, _record: Any, busy_ms: int) -> None:
    # Take transaction control from the sqlite3 module so that the "begin" listener decides BEGIN's mode.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", f"busy_timeout={busy_ms}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_begin(conn: Connection) -> None:
    # Writes take the write lock up front (IMMEDIATE): a deferred read-then-write transaction could fail
    # with SQLITE_BUSY at the upgrade without ever waiting on busy_timeout.
    mode = conn.get_execution_options().get(BEGIN_MODE, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(db: Path, busy_timeout_s: float) -> Engine:
    url = URL.create("sqlite", database=str(db))
    engine = create_engine(url, connect_args={"check_same_thread": False})
    busy_ms = int(busy_timeout_s * 1000)
    event.listen(engine, "connect", lambda conn, record: _on_connect(conn, record, busy_ms))
    event.listen(engine, "begin", _on_begin)
    return engine


def migrate(writer: Engine, path: Path) -> None:
    """Upgrade the schema to the newest Alembic revision, in one write transaction."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    with writer.begin() as conn:
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except CommandError as exc:
            raise StoreError(f"{path}: cannot migrate ({exc}); is it from a newer idealab?") from exc
