"""The SQLite engine of the run database (WAL, pragmas, transaction modes), its migrations, and the
translation of SQLite's failures (locked, full, read-only, corrupt) into errors a user can act on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, ExceptionContext

from idealab.errors import RunFault

# Alembic is imported where it is used, not here: it is a large share of the CLI's start-up, and commands
# that open no database (--help, env list, env check) should not pay for it.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BEGIN_MODE = "idealab_begin"  # execution option read by the "begin" listener


class StoreError(RunFault):
    """The database cannot be used (written by a newer idealab, corrupted, read-only, disk full, ...)."""


class StoreBusy(StoreError):
    """Another process held the database's write lock for longer than the busy timeout."""


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


def translate(exc: BaseException, db: Path) -> StoreError | None:
    """The user-facing error for an sqlite3 failure, None for anything else (a bug stays a bug)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF  # the primary code of an extended one
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusy(f"{db} is locked by another process ({exc}); is another program holding it open?")
    if code == sqlite3.SQLITE_FULL:
        return StoreError(f"the disk holding {db} is full ({exc}): free some space, then resume with `idealab run`")
    if code == sqlite3.SQLITE_READONLY:
        return StoreError(f"{db} cannot be written ({exc}): the work directory is read-only")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreError(f"{db} is corrupted or not a database ({exc}); idealab leaves it untouched")
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PERM):
        return StoreError(f"{db} cannot be opened, read or written ({exc}): check the disk and the permissions")
    return None


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


def readonly_uri(db: Path, immutable: bool = False) -> str:
    # the path is percent-quoted: '?' or '#' in a directory name must not end the file part of the URI
    return f"file:{quote(str(db.resolve()), safe='/')}?{'immutable=1' if immutable else 'mode=ro'}"


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def migrate(writer: Engine, path: Path) -> None:
    """Upgrade the schema to the newest Alembic revision, in one write transaction."""
    from alembic import command
    from alembic.util.exc import CommandError

    cfg = _config()
    with writer.begin() as conn:
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except CommandError as exc:
            raise StoreError(f"{path}: cannot migrate ({exc}); is it from a newer idealab?") from exc


def current_revision(conn: Connection) -> str | None:
    """The schema revision the database records (None for a database never migrated), read from Alembic's
    version table as Alembic writes it, without importing Alembic (half a second of every read-only
    command's start)."""
    found = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
    if found.first() is None:
        return None
    revisions = [str(r) for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()]
    if len(revisions) > 1:  # a linear history has one head; Alembic itself refuses such a database too
        raise StoreError(f"the database records several schema revisions ({', '.join(sorted(revisions))})")
    return revisions[0] if revisions else None


# Older schemas a read-only command reads as they are (it cannot migrate them): what they lack, it does
# without. 0001 has no jobs.handle / jobs.backend.
READABLE_OLDER = ("0001",)
# The newest migration's revision (tests/test_store.py checks it against Alembic's head): a read-only
# open of a current database needs no Alembic. Stale, it costs only that: `check_schema` asks Alembic.
HEAD_REVISION = "0002"


def check_schema(revision: str | None, path: Path) -> None:
    """For read-only use: the schema must be what this idealab writes, or an older one it can read as it is.
    The usual case (the newest revision) is settled without loading the migration scripts."""
    if revision == HEAD_REVISION or revision in READABLE_OLDER:
        return
    scripts = _scripts()
    if revision in scripts.get_heads():
        return
    if revision is None:
        raise StoreError(f"{path} has no idealab schema (not an idealab database, or never initialised)")
    known = {rev.revision for rev in scripts.walk_revisions()}
    if revision in known:
        raise StoreError(
            f"{path} has an older schema ({revision}) than this idealab reads; upgrade it by resuming the run "
            f"once with `idealab run --workdir {path.parent}`"
        )
    raise StoreError(f"{path} has schema {revision}, unknown to this idealab: is it from a newer idealab?")
