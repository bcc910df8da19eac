"""The run database: one SQLite file per workdir, WAL mode, migrated by Alembic on open.

Every write is its own short transaction (BEGIN IMMEDIATE ... COMMIT), so a process killed at any
moment loses nothing that was committed; `finish_idea` writes a result (status, metric, job end, metric
values, and for the baseline the run's baseline) in one transaction, so a result is never half-written.
The write lock is taken before a transaction's body runs; when another process holds it past the busy
timeout the whole transaction is tried again, a bounded number of times, then `StoreBusy` is raised.
Reads run in deferred transactions and, thanks to WAL, never wait for a writer. `Store.open_readonly`
never writes (no migration, no WAL set-up): it is what read-only commands use. Callers get frozen
records, never ORM objects.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, sessionmaker

from idealab.metrics import MetricValue
from idealab.status import Status
from idealab.store import reader
from idealab.store.engine import BEGIN_MODE, driver, make_engine, make_readonly_engine, migrate
from idealab.store.models import (
    CodeChange,
    Idea,
    Job,
    LLMCall,
    MetricRow,
    Run,
    code_change_record,
    idea_record,
    job_record,
    llm_call_record,
    run_record,
)
from idealab.store.records import (
    CodeChangeRecord,
    IdeaRecord,
    JobEnd,
    JobRecord,
    LLMCallRecord,
    RunRecord,
)
from idealab.store.schema import (
    DB_NAME,
    DEFAULT_BUSY_TIMEOUT_S,
    WITHOUT_JOB_HANDLES,
    StoreBusy,
    StoreError,
    check_schema,
    current_revision,
    readonly_target,
    refuse_empty,
    translate,
)

DEFAULT_WRITE_ATTEMPTS = 4  # so a write gives up after about two minutes of someone else's lock

log = logging.getLogger(__name__)


class _Unset(enum.Enum):
    TOKEN = 0


UNSET: Final = _Unset.TOKEN  # "leave this field as it is" in update_idea


class Store(reader.RunReads):
    """Typed access to `<workdir>/idealab.db`. Use `Store.open(workdir)`; close with `close()`. Its reads
    of listings (`reader.RunReads`) run the same SQL as `RunReader`, on the engine's connections."""

    def __init__(
        self,
        engine: Engine,
        path: Path,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        write_attempts: int = DEFAULT_WRITE_ATTEMPTS,
    ) -> None:
        if write_attempts < 1:
            raise ValueError(f"write_attempts must be >= 1, got {write_attempts}")
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.write_attempts = write_attempts
        self._engine = engine
        self._writer = engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
        self._read_sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        self._legacy_jobs = False  # read-only, schema 0001: the jobs table has no handle / backend columns

    # ---- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        workdir: Path,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        write_attempts: int = DEFAULT_WRITE_ATTEMPTS,
    ) -> Store:
        """Create the workdir and database if needed and migrate the schema to the newest revision.

        An existing database that is empty (0 bytes) or fails SQLite's integrity check is refused, never
        re-created: the workdir's experiments belong to the run it held."""
        path = workdir / DB_NAME
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {workdir} ({exc.strerror})") from exc
        refuse_empty(path)
        store = cls(make_engine(path, busy_timeout_s), path, busy_timeout_s, write_attempts)
        try:
            store._check_integrity()
            migrate(store._writer, path)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_readonly(
        cls, workdir: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, leave_untouched: bool = False
    ) -> Store:
        """Open an existing database for reading only: nothing is migrated or written (idealab.db keeps
        its bytes and mtime). The schema must be the one this idealab writes, or an older one it reads as
        it is (`READABLE_OLDER`: what it lacks reads as None); any other is refused, an older one with the
        advice to resume the run once (which migrates it).

        WAL: a read-only connection needs the -shm index. SQLite creates it (and an empty -wal) when the
        directory is writable; on a read-only disk without them the database is opened as immutable,
        which is exact because no writer can exist there and no WAL holds unread commits.

        `leave_untouched`: create no file in the workdir either (another run's, read for its baseline):
        without a -wal file no writer has the database open and no commit is unread, so it is opened as
        immutable; with one, the -shm exists already and the plain read-only open adds nothing."""
        path, immutable = readonly_target(workdir, leave_untouched)
        store = cls(make_readonly_engine(path, busy_timeout_s, immutable), path, busy_timeout_s, 1)
        try:
            with store._engine.connect() as conn:
                revision = current_revision(driver(conn))
            check_schema(revision, path)
        except BaseException:
            store.close()
            raise
        store._legacy_jobs = revision in WITHOUT_JOB_HANDLES
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_integrity(self) -> None:
        """Refuse a damaged database before anything is written to it (SQLite's quick_check)."""
        with self._engine.connect() as conn:
            verdict = conn.exec_driver_sql("PRAGMA quick_check(1)").scalar()
        if verdict != "ok":
            detail = " ".join(str(verdict).split())
            raise StoreError(f"{self.path} is corrupted ({detail}); idealab leaves it untouched")

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction whose body runs with the write lock already held (so a busy database
        never interrupts it halfway; the transaction is tried again as a whole instead)."""
        session = self._locked_session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _locked_session(self) -> Session:
        for attempt in range(1, self.write_attempts + 1):
            session = self._write_sessions()
            session.begin()
            try:
                session.connection()  # BEGIN IMMEDIATE: waits up to busy_timeout_s for the write lock
                return session
            except StoreBusy as exc:
                session.close()
                if attempt == self.write_attempts:
                    waited = self.busy_timeout_s * self.write_attempts
                    raise StoreBusy(
                        f"{self.path} stayed locked by another process for {waited:g} s ({attempt} attempts); "
                        "close whatever holds it open (an sqlite3 shell, a backup), then resume with `idealab run`"
                    ) from exc
                log.warning(
                    "%s is locked by another process; waited %g s, trying again (%d/%d)",
                    self.path, self.busy_timeout_s, attempt + 1, self.write_attempts,
                )
        raise AssertionError("unreachable: the loop returns or raises")

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._read_sessions.begin() as session:
            yield session

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection's sqlite3 connection, for the reads `idealab.store.reader` makes (the same
        SQL as `RunReader`'s), with SQLite's failures translated as the engine translates them."""
        with self._engine.connect() as conn:
            try:
                yield driver(conn)
            except sqlite3.Error as exc:
                raise translate(exc, self.path) or StoreError(f"{self.path}: {exc}") from exc

    # ---- runs ------------------------------------------------------------------------------------

    def create_run(
        self,
        env_name: str,
        env_root: Path | str,
        preset: str | None,
        config: dict[str, Any],
        manifest: dict[str, Any],
    ) -> RunRecord:
        with self._write() as s:
            existing = s.scalars(select(Run.id)).first()
            if existing is not None:
                raise StoreError(f"{self.path} already holds run {existing}; a workdir holds one run")
            run = Run(
                created_at=time.time(),
                env_name=env_name,
                env_root=str(env_root),
                preset=preset,
                config=config,
                manifest=manifest,
            )
            s.add(run)
            s.flush()
            return run_record(run)

    def set_run_config(self, run_id: int, config: dict[str, Any]) -> None:
        """Replace a run's stored options (a resume that was allowed to change its LLM settings)."""
        with self._write() as s:
            _get(s, Run, run_id).config = config

    def set_baseline(self, run_id: int, metric: float | None, status: str, reason: str | None) -> None:
        with self._write() as s:
            run = _get(s, Run, run_id)
            run.baseline_metric, run.baseline_status, run.baseline_reason = metric, str(status), reason

    # ---- ideas -----------------------------------------------------------------------------------

    def add_idea(
        self, run_id: int, epoch: int, idx: int, kind: str, text: str, ideator: str, payload: dict[str, Any]
    ) -> IdeaRecord:
        """Store a new idea as `proposed`; if (run, epoch, idx) exists already, return that one unchanged."""
        with self._write() as s:
            found = s.scalars(
                select(Idea).where(Idea.run_id == run_id, Idea.epoch == epoch, Idea.idx == idx)
            ).first()
            if found is None:
                found = Idea(
                    run_id=run_id, epoch=epoch, idx=idx, kind=kind, text=text, ideator=ideator,
                    payload=payload, status=Status.PROPOSED.value, created_at=time.time(), attempts=0,
                )  # fmt: skip
                s.add(found)
                s.flush()
            return idea_record(found)

    def get_idea(self, idea_id: int) -> IdeaRecord:
        with self._read() as s:
            return idea_record(_get(s, Idea, idea_id))

    def update_idea(
        self,
        idea_id: int,
        *,
        status: Status | str | None = None,
        metric: float | None | _Unset = UNSET,
        reason: str | None | _Unset = UNSET,
        started_at: float | None | _Unset = UNSET,
        finished_at: float | None | _Unset = UNSET,
        applied_diff: str | None | _Unset = UNSET,
        final_diff: str | None | _Unset = UNSET,
        payload: dict[str, Any] | _Unset = UNSET,
    ) -> IdeaRecord:
        """Change only the fields given (None is a value: it clears the field)."""
        with self._write() as s:
            idea = _get(s, Idea, idea_id)
            if status is not None:
                idea.status = Status(status).value
            fields = {
                "metric": metric, "reason": reason, "started_at": started_at, "finished_at": finished_at,
                "applied_diff": applied_diff, "final_diff": final_diff, "payload": payload,
            }  # fmt: skip
            for name, value in fields.items():
                if value is not UNSET:
                    setattr(idea, name, value)
            s.flush()
            return idea_record(idea)

    def finish_idea(
        self,
        idea_id: int,
        status: Status | str,
        metric: float | None,
        reason: str | None,
        finished_at: float,
        job_key: str | None = None,
        values: Iterable[MetricValue] | None = None,
        job_end: JobEnd | None = None,
        baseline: bool = False,
    ) -> IdeaRecord:
        """Record an idea's result in ONE transaction: its terminal status, metric and reason, and, for
        `job_key`, the job's end and the metric values it reported. Without `job_end`, a job not yet
        marked finished gets the idea's status and `finished_at` (its exit code stays unknown); without
        `job_key`, every unfinished job of the idea does. `baseline`: the idea is the run's baseline, so
        the run's baseline (metric only when OK, status, reason) is written in the same transaction."""
        terminal = Status(status)
        if not terminal.terminal:
            raise ValueError(f"finish_idea needs a terminal status, got {terminal.value!r}")
        if (values is not None or job_end is not None) and job_key is None:
            raise ValueError("values and job_end belong to a job: pass job_key")
        with self._write() as s:
            idea = _get(s, Idea, idea_id)
            idea.status, idea.metric, idea.reason, idea.finished_at = (
                terminal.value,
                metric,
                reason,
                finished_at,
            )
            if job_key is not None:
                job = _job(s, job_key)
                if job.idea_id != idea_id:
                    raise ValueError(f"job {job_key!r} belongs to idea {job.idea_id}, not {idea_id}")
                if job_end is not None:
                    _end_job(job, job_end)
                elif job.finished_at is None:  # never leave a finished idea's job looking alive
                    job.status, job.finished_at = terminal.value, finished_at
                s.add_all(_metric_rows(job.id, values or ()))
            else:  # never leave a finished idea's job looking alive
                for job in s.scalars(select(Job).where(Job.idea_id == idea_id, Job.finished_at.is_(None))):
                    job.status, job.finished_at = terminal.value, finished_at
            if baseline:
                run = _get(s, Run, idea.run_id)
                run.baseline_metric = metric if terminal is Status.OK else None
                run.baseline_status, run.baseline_reason = terminal.value, reason
            s.flush()
            return idea_record(idea)

    def set_payload_entry(self, idea_id: int, key: str, value: Any) -> IdeaRecord:
        """Set one key of an idea's payload (read and written in one transaction), e.g. its `audit`."""
        with self._write() as s:
            idea = _get(s, Idea, idea_id)
            idea.payload = {**(idea.payload or {}), key: value}
            s.flush()
            return idea_record(idea)

    def idea_payloads(self, run_id: int) -> list[dict[str, Any]]:
        """Every idea's payload, in (epoch, idx) order, without loading the rest of the rows."""
        query = select(Idea.payload).where(Idea.run_id == run_id).order_by(Idea.epoch, Idea.idx)
        with self._read() as s:
            return list(s.scalars(query))

    def status_counts(self, run_id: int) -> dict[str, int]:
        query = select(Idea.status, func.count()).where(Idea.run_id == run_id).group_by(Idea.status)
        with self._read() as s:
            return {status: count for status, count in s.execute(query).all()}

    # ---- code changes ----------------------------------------------------------------------------

    def add_code_change(
        self, idea_id: int, attempt: int, sample: int, fmt: str, diff: str, outcome: str, error: str | None
    ) -> int:
        with self._write() as s:
            row = CodeChange(
                idea_id=idea_id, attempt=attempt, sample=sample, format=fmt, diff=diff, outcome=outcome,
                error=error, created_at=time.time(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            return row.id

    def code_changes(self, idea_id: int) -> list[CodeChangeRecord]:
        query = select(CodeChange).where(CodeChange.idea_id == idea_id).order_by(CodeChange.id)
        with self._read() as s:
            return [code_change_record(row) for row in s.scalars(query)]

    # ---- jobs and their metric values ------------------------------------------------------------

    def add_job(
        self,
        idea_id: int,
        job_key: str,
        command: str,
        workspace: Path | str,
        stdout_path: Path | str,
        stderr_path: Path | str,
        handle: str | None = None,
        backend: str | None = None,
    ) -> JobRecord:
        """Record a job as `ready` (waiting for a slot) and count one more attempt for its idea. `handle`: the
        one its backend claimed for it (`Backend.claim`), stored before the job is submitted."""
        try:
            with self._write() as s:
                idea = _get(s, Idea, idea_id)
                idea.attempts += 1
                job = Job(
                    idea_id=idea_id, job_key=job_key, command=command, gpu_ids="", workspace=str(workspace),
                    stdout_path=str(stdout_path), stderr_path=str(stderr_path), status=Status.READY.value,
                    submitted_at=time.time(), timed_out=False, handle=handle, backend=backend,
                )  # fmt: skip
                s.add(job)
                s.flush()
                return job_record(job)
        except IntegrityError as exc:
            raise ValueError(f"job key {job_key!r} is already used") from exc

    def job_started(
        self,
        job_key: str,
        started_at: float,
        gpu_ids: tuple[int, ...],
        pid: int | None,
        handle: str | None = None,
        backend: str | None = None,
    ) -> None:
        """Record that a job started (again, with better figures, where its backend tells twice); without a
        `handle`, the one claimed for it stays."""
        with self._write() as s:
            job = _job(s, job_key)
            job.status, job.started_at, job.pid = Status.RUNNING.value, started_at, pid
            job.gpu_ids = ",".join(str(gpu) for gpu in gpu_ids)
            if handle is not None:
                job.handle, job.backend = handle, backend

    def job_finished(
        self,
        job_key: str,
        finished_at: float,
        exit_code: int | None,
        timed_out: bool,
        status: str,
        error: str | None = None,
    ) -> None:
        """Record how a job ended; `status` is usually a terminal Status, but any word is kept as given."""
        with self._write() as s:
            _end_job(_job(s, job_key), JobEnd(finished_at, exit_code, timed_out, status, error))

    def jobs(self, idea_id: int | None = None, statuses: Iterable[str] | None = None) -> list[JobRecord]:
        query = select(Job).order_by(Job.id)
        if idea_id is not None:
            query = query.where(Job.idea_id == idea_id)
        if statuses is not None:
            query = query.where(Job.status.in_([str(x) for x in statuses]))
        if self._legacy_jobs:
            query = query.options(defer(Job.handle), defer(Job.backend))
        with self._read() as s:
            return [job_record(job, self._legacy_jobs) for job in s.scalars(query)]

    def add_metric_values(self, job_key: str, values: Iterable[MetricValue]) -> None:
        with self._write() as s:
            s.add_all(_metric_rows(_job(s, job_key).id, values))

    # ---- LLM calls -------------------------------------------------------------------------------

    def add_llm_call(
        self,
        run_id: int,
        role: str,
        provider: str,
        model: str,
        prompt: str,
        response: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float | None,
        latency_s: float,
        error: str | None = None,
        idea_id: int | None = None,
        extra: dict[str, Any] | None = None,
        cached_tokens: int | None = None,
        thinking_tokens: int | None = None,
    ) -> int:
        with self._write() as s:
            row = LLMCall(
                run_id=run_id, idea_id=idea_id, role=role, provider=provider, model=model, prompt=prompt,
                response=response, input_tokens=input_tokens, output_tokens=output_tokens,
                cached_tokens=cached_tokens, thinking_tokens=thinking_tokens, cost_usd=cost_usd,
                latency_s=latency_s, error=error, extra=extra, created_at=time.time(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            return row.id

    def llm_calls(self, run_id: int) -> list[LLMCallRecord]:
        query = select(LLMCall).where(LLMCall.run_id == run_id).order_by(LLMCall.id)
        with self._read() as s:
            return [llm_call_record(row) for row in s.scalars(query)]



_Row = TypeVar("_Row")


def _get(session: Session, table: type[_Row], key: int) -> _Row:
    row = session.get(table, key)
    if row is None:
        raise KeyError(f"no {getattr(table, '__tablename__', table.__name__)} row with id {key}")
    return row


def _job(session: Session, job_key: str) -> Job:
    job = session.scalars(select(Job).where(Job.job_key == job_key)).first()
    if job is None:
        raise KeyError(f"no job with key {job_key!r}")
    return job


def _end_job(job: Job, end: JobEnd) -> None:
    job.status, job.finished_at, job.exit_code = str(end.status), end.finished_at, end.exit_code
    job.timed_out, job.error = end.timed_out, end.error


def _metric_rows(job_id: int, values: Iterable[MetricValue]) -> list[MetricRow]:
    return [
        MetricRow(job_id=job_id, name=v.name, value=v.value, step=v.step, source=v.source) for v in values
    ]
