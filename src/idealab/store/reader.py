"""The run database's reads, in SQL on the stdlib sqlite3 module, and `RunReader`: a run opened read-only
without SQLAlchemy.

`idealab status`, `report`, `serve` and `export` only read. Importing SQLAlchemy (with its ORM) is most of
a fresh interpreter's start-up for them (about 0.35 s of 0.6 s on the development VM: docs/BENCHMARKS.md),
so they read through `RunReader`. `Store` runs the same functions on its own connections for these reads:
each query exists once, here. Every function takes an open sqlite3 connection and returns the records of
`idealab.store.records`, decoded as the ORM's column types decode them (JSON text, NaN stored as NULL).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from idealab.metrics import MetricValue
from idealab.status import Status
from idealab.store.records import IdeaRecord, IdeaSummary, JobSummary, LLMCallSummary, RunRecord, gpu_ids_of
from idealab.store.schema import (
    DEFAULT_BUSY_TIMEOUT_S,
    StoreError,
    check_schema,
    current_revision,
    readonly_target,
    readonly_uri,
    translate,
)

IDEA_COLUMNS = (
    "id", "run_id", "epoch", "idx", "kind", "text", "ideator", "payload", "status", "metric", "reason",
    "created_at", "started_at", "finished_at", "attempts",
)  # fmt: skip
DIFF_COLUMNS = ("applied_diff", "final_diff")  # of the ideas table: the largest, left unread by listings
MAX_BINDS = 500  # ids per `IN (...)`: SQLite binds at most 999 parameters per statement


# ---- the reads ------------------------------------------------------------------------------------------


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def read_schema_version(conn: sqlite3.Connection, path: Path) -> str:
    revision = current_revision(conn)
    if revision is None:
        raise StoreError(f"{path} has no schema version")
    return revision


def read_run(conn: sqlite3.Connection) -> RunRecord | None:
    row = conn.execute(
        "SELECT id, created_at, env_name, env_root, preset, config, manifest, baseline_metric, baseline_status, "
        "baseline_reason FROM runs ORDER BY id LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return RunRecord(row[0], row[1], row[2], row[3], row[4], _json(row[5]), _json(row[6]), row[7], row[8], row[9])


def read_ideas(
    conn: sqlite3.Connection,
    run_id: int,
    epoch: int | None = None,
    statuses: Iterable[Status | str] | None = None,
    diffs: bool = True,
) -> list[IdeaRecord]:
    """The run's ideas ordered by (epoch, idx), optionally of one epoch and/or some statuses.

    `diffs=False` leaves the two diffs unread (None in the records): listings of thousands of ideas
    read them for the few they show (`read_idea_diffs`), and which ideas have a change (`read_changed_ideas`)."""
    columns = ", ".join((*IDEA_COLUMNS, *(DIFF_COLUMNS if diffs else ("NULL", "NULL"))))
    sql = f"SELECT {columns} FROM ideas WHERE run_id = ?"
    params: list[Any] = [run_id]
    if epoch is not None:
        sql, params = sql + " AND epoch = ?", [*params, epoch]
    if statuses is not None:
        wanted = [Status(s).value for s in statuses]
        sql, params = sql + f" AND status IN ({', '.join('?' * len(wanted))})", [*params, *wanted]
    rows = conn.execute(sql + " ORDER BY epoch, idx", params).fetchall()
    return [
        IdeaRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _json(r[7]), Status(r[8]), r[9], r[10], r[11], r[12],
                   r[13], r[14], r[15], r[16])  # fmt: skip
        for r in rows
    ]


def read_idea_summaries(conn: sqlite3.Connection, run_id: int) -> list[IdeaSummary]:
    """Every idea's listing columns ordered by (epoch, idx)."""
    rows = conn.execute(
        f"SELECT {', '.join(IdeaSummary._fields)} FROM ideas WHERE run_id = ? ORDER BY epoch, idx", (run_id,)
    ).fetchall()
    assert IdeaSummary._fields[5] == "status"
    return [IdeaSummary(r[0], r[1], r[2], r[3], r[4], Status(r[5]), r[6], r[7], r[8], r[9], r[10], r[11]) for r in rows]


def read_idea_audits(conn: sqlite3.Connection, run_id: int) -> dict[int, dict[str, Any]]:
    """Idea id -> the auditor's verdict stored in its payload (`audit`), for the ideas that have one."""
    rows = conn.execute(
        "SELECT id, payload FROM ideas WHERE run_id = ? AND json_extract(payload, '$.audit') IS NOT NULL", (run_id,)
    )
    return {idea_id: json.loads(payload)["audit"] for idea_id, payload in rows}


def read_idea_diffs(conn: sqlite3.Connection, idea_ids: Iterable[int]) -> dict[int, tuple[str | None, str | None]]:
    """Idea id -> (applied_diff, final_diff), for the given ideas (those that exist)."""
    wanted = sorted(set(idea_ids))
    found: dict[int, tuple[str | None, str | None]] = {}
    for start in range(0, len(wanted), MAX_BINDS):
        chunk = wanted[start : start + MAX_BINDS]
        sql = f"SELECT id, applied_diff, final_diff FROM ideas WHERE id IN ({', '.join('?' * len(chunk))})"
        for idea_id, applied, final in conn.execute(sql, chunk):
            found[idea_id] = (applied, final)
    return found


def read_changed_ideas(conn: sqlite3.Connection, run_id: int) -> set[int]:
    """The ids of the run's ideas whose code change was applied (applied_diff is set), without reading it."""
    rows = conn.execute("SELECT id FROM ideas WHERE run_id = ? AND applied_diff IS NOT NULL", (run_id,))
    return {idea_id for (idea_id,) in rows}


def read_job_summaries(conn: sqlite3.Connection) -> list[JobSummary]:
    """Every job's listing columns in the order they were made (columns every schema has, 0001 included)."""
    rows = conn.execute(f"SELECT {', '.join(JobSummary._fields)} FROM jobs ORDER BY id").fetchall()
    return [
        JobSummary(r[0], r[1], r[2], gpu_ids_of(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]), r[12])
        for r in rows
    ]


def read_metric_values(conn: sqlite3.Connection, job_key: str) -> list[MetricValue]:
    found = conn.execute("SELECT id FROM jobs WHERE job_key = ?", (job_key,)).fetchone()
    if found is None:
        raise KeyError(f"no job with key {job_key!r}")
    rows = conn.execute("SELECT name, value, step, source FROM metric_values WHERE job_id = ? ORDER BY id", found)
    # SQLite stores NaN as NULL: the column is never NULL for another reason
    return [MetricValue(name, math.nan if v is None else float(v), step, source) for name, v, step, source in rows]


def read_llm_call_summaries(conn: sqlite3.Connection, run_id: int, role: str | None = None) -> list[LLMCallSummary]:
    """Every call's listing columns (no prompt, no answer: the covering index ix_llm_calls_listing answers
    this), in the order they were made; with `role`, only the calls of that role."""
    sql = f"SELECT {', '.join(LLMCallSummary._fields)} FROM llm_calls WHERE run_id = ?"
    params: list[Any] = [run_id]
    if role is not None:
        sql, params = sql + " AND role = ?", [*params, role]
    rows = conn.execute(sql + " ORDER BY id", params).fetchall()
    return [LLMCallSummary(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _json(r[8]), r[9]) for r in rows]


def read_total_cost(conn: sqlite3.Connection, run_id: int) -> float:
    """Dollars spent on calls of known price (calls to unknown models count tokens only)."""
    (total,) = conn.execute("SELECT sum(cost_usd) FROM llm_calls WHERE run_id = ?", (run_id,)).fetchone()
    return float(total or 0.0)


def read_compute_seconds(conn: sqlite3.Connection, epoch: int | None = None) -> tuple[float, float]:
    """(job seconds, GPU seconds) summed over every job that started and finished; with `epoch`, only the
    jobs of that epoch's ideas (e.g. the baseline's repeats). GPUs are counted from the stored "0,1"."""
    duration = "max(finished_at - started_at, 0.0)"
    gpus = "CASE WHEN gpu_ids = '' THEN 0 ELSE length(gpu_ids) - length(replace(gpu_ids, ',', '')) + 1 END"
    sql = f"SELECT sum({duration}), sum({duration} * ({gpus})) FROM jobs "
    sql += "WHERE started_at IS NOT NULL AND finished_at IS NOT NULL"
    params: tuple[int, ...] = ()
    if epoch is not None:
        sql, params = sql + " AND idea_id IN (SELECT id FROM ideas WHERE epoch = ?)", (epoch,)
    job_s, gpu_s = conn.execute(sql, params).fetchone()
    return float(job_s or 0.0), float(gpu_s or 0.0)


# ---- the reads as methods ------------------------------------------------------------------------------------


class RunReads:
    """What the read-only views read of a run, as methods: `RunReader` (sqlite3 alone) and `Store` (on a
    run it writes) both provide them, each running the functions above on a connection of its own."""

    path: Path  # the database file

    @abstractmethod
    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A connection to read with, SQLite's failures translated into `StoreError`s."""

    def schema_version(self) -> str:
        with self._reading() as conn:
            return read_schema_version(conn, self.path)

    def get_run(self) -> RunRecord | None:
        with self._reading() as conn:
            return read_run(conn)

    def ideas(
        self,
        run_id: int,
        epoch: int | None = None,
        statuses: Iterable[Status | str] | None = None,
        diffs: bool = True,
    ) -> list[IdeaRecord]:
        with self._reading() as conn:
            return read_ideas(conn, run_id, epoch, statuses, diffs)

    def idea_summaries(self, run_id: int) -> list[IdeaSummary]:
        with self._reading() as conn:
            return read_idea_summaries(conn, run_id)

    def idea_audits(self, run_id: int) -> dict[int, dict[str, Any]]:
        with self._reading() as conn:
            return read_idea_audits(conn, run_id)

    def idea_diffs(self, idea_ids: Iterable[int]) -> dict[int, tuple[str | None, str | None]]:
        with self._reading() as conn:
            return read_idea_diffs(conn, idea_ids)

    def changed_ideas(self, run_id: int) -> set[int]:
        with self._reading() as conn:
            return read_changed_ideas(conn, run_id)

    def job_summaries(self) -> list[JobSummary]:
        with self._reading() as conn:
            return read_job_summaries(conn)

    def metric_values(self, job_key: str) -> list[MetricValue]:
        with self._reading() as conn:
            return read_metric_values(conn, job_key)

    def llm_call_summaries(self, run_id: int, role: str | None = None) -> list[LLMCallSummary]:
        with self._reading() as conn:
            return read_llm_call_summaries(conn, run_id, role)

    def total_cost(self, run_id: int) -> float:
        with self._reading() as conn:
            return read_total_cost(conn, run_id)

    def compute_seconds(self, epoch: int | None = None) -> tuple[float, float]:
        with self._reading() as conn:
            return read_compute_seconds(conn, epoch)


# ---- a run opened read-only --------------------------------------------------------------------------------


class RunReader(RunReads):
    """`<workdir>/idealab.db` opened read-only with sqlite3: nothing is migrated or written (the database
    keeps its bytes and mtime), the schema must be one this idealab reads (`check_schema`), and SQLite's
    failures become `StoreError`s. Safe beside a live run (WAL readers never block the writer). One
    connection, used by one thread at a time (the dashboard's request threads share it)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, workdir: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, leave_untouched: bool = False
    ) -> RunReader:
        """Open the run in `workdir` for reading (see `Store.open_readonly`, which opens the same way)."""
        path, immutable = readonly_target(workdir, leave_untouched)
        try:
            conn = sqlite3.connect(readonly_uri(path, immutable), uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise translate(exc, path) or StoreError(f"{path}: {exc}") from exc
        reader = cls(conn, path)
        try:
            with reader._guard():
                conn.isolation_level = None  # autocommit: each read is its own snapshot, no write ever begins
                conn.execute("PRAGMA query_only=ON")
                conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
                check_schema(current_revision(conn), path)
        except BaseException:
            reader.close()
            raise
        return reader

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._guard()

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise translate(exc, self.path) or StoreError(f"{self.path}: {exc}") from exc
