"""What a run database is, without SQLAlchemy: its file name, its schema revision and the revisions a
read-only open accepts, the read-only URI, and SQLite's failures as errors a user can act on. The engine
(`idealab.store.engine`) and the SQLAlchemy-free reader (`idealab.store.reader`) share it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from idealab.errors import RunFault

# Alembic is imported where it is used, not here: it is a large share of the CLI's start-up, and commands
# that open no database (--help, env list, env check) should not pay for it.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

DB_NAME = "idealab.db"
DEFAULT_BUSY_TIMEOUT_S = 30.0  # how long a connection waits for another's lock before SQLITE_BUSY
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class StoreError(RunFault):
    """The database cannot be used (written by a newer idealab, corrupted, read-only, disk full, ...)."""


class StoreBusy(StoreError):
    """Another process held the database's write lock for longer than the busy timeout."""


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


def readonly_uri(db: Path, immutable: bool = False) -> str:
    # the path is percent-quoted: '?' or '#' in a directory name must not end the file part of the URI
    return f"file:{quote(str(db.resolve()), safe='/')}?{'immutable=1' if immutable else 'mode=ro'}"


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def current_revision(conn: sqlite3.Connection) -> str | None:
    """The schema revision the database records (None for a database never migrated), read from Alembic's
    version table as Alembic writes it, without importing Alembic (half a second of every read-only
    command's start)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
    if found.fetchone() is None:
        return None
    revisions = [str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version")]
    if len(revisions) > 1:  # a linear history has one head; Alembic itself refuses such a database too
        raise StoreError(f"the database records several schema revisions ({', '.join(sorted(revisions))})")
    return revisions[0] if revisions else None


# Older schemas a read-only command reads as they are (it cannot migrate them): what they lack, it does
# without. 0001 has no jobs.handle / jobs.backend; 0002 no covering index of the LLM calls (slower only).
READABLE_OLDER = ("0001", "0002")
WITHOUT_JOB_HANDLES = ("0001",)
# The newest migration's revision (tests/test_store.py checks it against Alembic's head): a read-only
# open of a current database needs no Alembic. Stale, it costs only that: `check_schema` asks Alembic.
HEAD_REVISION = "0003"


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


def refuse_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:  # SQLite would take it for a new database: a new run over the old one's experiments
        advice = (
            "restore it from a copy, or use another --workdir"
            if (path.parent / "experiments").exists()
            else "the workdir holds no experiments: delete the file to start afresh"
        )
        raise StoreError(f"{path} is empty (0 bytes); idealab leaves it untouched: {advice}")


def needs_immutable(path: Path) -> bool:
    """Whether `path` can only be read as immutable: a plain read-only open fails (no -shm can be
    created: read-only disk) and no WAL with unread commits would be ignored by doing so."""
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise translate(exc, path) or StoreError(f"{path}: {exc}") from exc
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return False
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", -1) & 0xFF != sqlite3.SQLITE_CANTOPEN:
            raise translate(exc, path) or StoreError(f"{path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise translate(exc, path) or StoreError(f"{path}: {exc}") from exc
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(
            f"{path} cannot be read here: its write-ahead log holds commits and the directory is read-only; "
            "copy the workdir to a writable place and read the copy"
        )
    return True


def readonly_target(workdir: Path, leave_untouched: bool) -> tuple[Path, bool]:
    """The database of the run in `workdir`, checked for a read-only open, and whether to open it as
    immutable (`Store.open_readonly` says when; `RunReader.open` opens the same way)."""
    path = workdir / DB_NAME
    if not path.is_file():
        raise StoreError(f"{workdir}: no idealab run here (no {DB_NAME})")
    refuse_empty(path)
    without_wal = not path.with_name(path.name + "-wal").exists()
    return path, (leave_untouched and without_wal) or needs_immutable(path)
