"""The run database's tables (ORM) and the frozen records that `Store` returns in their place.

Callers never see ORM objects. Times are epoch seconds (REAL). JSON columns hold text written with
`json.dumps`. Any table change needs a new Alembic revision under `migrations/versions/` (a test checks
that the migrations and these tables agree).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from idealab.status import Status
from idealab.store.records import (
    CodeChangeRecord,
    IdeaRecord,
    JobRecord,
    LLMCallRecord,
    RunRecord,
    gpu_ids_of,
)

# Stable constraint names, so later migrations (SQLite batch mode) can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JSONText(TypeDecorator[Any]):
    """A JSON value stored as text (NaN/Infinity allowed, as Python's json writes them)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


class NaNFloat(TypeDecorator[float]):
    """A float that may be NaN. SQLite keeps +-inf as REAL but turns NaN into NULL; this type makes that
    mapping explicit and reversible: the column is never NULL for another reason."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Dialect) -> float | None:
        if value is None or math.isnan(value):
            return None
        return float(value)

    def process_result_value(self, value: float | None, dialect: Dialect) -> float:
        return math.nan if value is None else float(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    env_name: Mapped[str] = mapped_column(String)
    env_root: Mapped[str] = mapped_column(Text)
    preset: Mapped[str | None] = mapped_column(String)
    config: Mapped[dict[str, Any]] = mapped_column(JSONText)  # CLI options, seed, ...
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONText)  # snapshot of the environment's manifest
    baseline_metric: Mapped[float | None] = mapped_column(Float)
    baseline_status: Mapped[str | None] = mapped_column(String)
    baseline_reason: Mapped[str | None] = mapped_column(Text)


class Idea(Base):
    """One experiment: an idea, its code change and its result."""

    __tablename__ = "ideas"
    __table_args__ = (
        UniqueConstraint("run_id", "epoch", "idx", name="uq_ideas_run_epoch_idx"),
        Index("ix_ideas_run_status", "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    epoch: Mapped[int] = mapped_column(Integer)  # -1 = the baseline experiment
    idx: Mapped[int] = mapped_column(Integer)  # position within the epoch
    kind: Mapped[str] = mapped_column(String)  # baseline | initial | exploit | explore
    text: Mapped[str] = mapped_column(Text)
    ideator: Mapped[str] = mapped_column(String)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONText)  # knob values, parent idea ids, ...
    status: Mapped[str] = mapped_column(String)  # an idealab.status.Status value
    metric: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # jobs started for this idea
    applied_diff: Mapped[str | None] = mapped_column(Text)  # the code change that was applied
    final_diff: Mapped[str | None] = mapped_column(Text)  # the job's copy against the environment


class CodeChange(Base):
    """One diff the implementer produced for an idea, applied or not."""

    __tablename__ = "code_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idea_id: Mapped[int] = mapped_column(ForeignKey("ideas.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    sample: Mapped[int] = mapped_column(Integer)  # which of the parallel samples
    format: Mapped[str] = mapped_column(String)  # diff | search_replace
    diff: Mapped[str] = mapped_column(Text)  # as the implementer produced it
    outcome: Mapped[str] = mapped_column(String)  # applied | rejected | ...
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idea_id: Mapped[int] = mapped_column(ForeignKey("ideas.id"), index=True)
    job_key: Mapped[str] = mapped_column(String, unique=True)  # e.g. "e3-i7-a1"
    command: Mapped[str] = mapped_column(Text)
    gpu_ids: Mapped[str] = mapped_column(String, default="")  # "0,1" or ""
    workspace: Mapped[str] = mapped_column(Text)
    stdout_path: Mapped[str] = mapped_column(Text)
    stderr_path: Mapped[str] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)  # the job's supervisor (local), for the user to see
    handle: Mapped[str | None] = mapped_column(Text)  # the backend's durable id, to reattach after a restart
    backend: Mapped[str | None] = mapped_column(String)  # the backend that ran it ("local", "slurm", ...)
    status: Mapped[str] = mapped_column(String)  # ready | running | how it ended
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)


class MetricRow(Base):
    __tablename__ = "metric_values"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    name: Mapped[str] = mapped_column(String)
    value: Mapped[float] = mapped_column(NaNFloat, nullable=True)  # NULL in SQLite means NaN
    step: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String)


class LLMCall(Base):
    __tablename__ = "llm_calls"
    __table_args__ = (
        # covering index of what listings read (`LLMCallSummary`, costs): never the prompts and answers
        Index(
            "ix_llm_calls_listing", "run_id", "id", "role", "idea_id", "model", "input_tokens", "output_tokens",
            "cost_usd", "error", "extra", "created_at",
        ),  # fmt: skip
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    idea_id: Mapped[int | None] = mapped_column(ForeignKey("ideas.id"), index=True)
    role: Mapped[str] = mapped_column(String)  # ideator | implementer | ...
    provider: Mapped[str] = mapped_column(String)
    model: Mapped[str] = mapped_column(String)
    prompt: Mapped[str] = mapped_column(Text)  # JSON of the messages
    response: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    thinking_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)  # None when the model's price is unknown
    latency_s: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    created_at: Mapped[float] = mapped_column(Float)


def run_record(r: Run) -> RunRecord:
    return RunRecord(
        r.id, r.created_at, r.env_name, r.env_root, r.preset, r.config, r.manifest,
        r.baseline_metric, r.baseline_status, r.baseline_reason,
    )  # fmt: skip


def idea_record(i: Idea | Row[Any]) -> IdeaRecord:
    """The record of an ORM object or of a Core row of the table (same attribute names)."""
    return IdeaRecord(
        i.id, i.run_id, i.epoch, i.idx, i.kind, i.text, i.ideator, i.payload, Status(i.status), i.metric,
        i.reason, i.created_at, i.started_at, i.finished_at, i.attempts, i.applied_diff, i.final_diff,
    )  # fmt: skip


def code_change_record(c: CodeChange) -> CodeChangeRecord:
    return CodeChangeRecord(
        c.id, c.idea_id, c.attempt, c.sample, c.format, c.diff, c.outcome, c.error, c.created_at
    )


def job_record(j: Job, legacy: bool = False) -> JobRecord:
    """`legacy`: read from a database of schema 0001 (no handle, no backend), which a read-only command
    reads as it is."""
    return JobRecord(
        j.id, j.idea_id, j.job_key, j.command, gpu_ids_of(j.gpu_ids), Path(j.workspace), Path(j.stdout_path),
        Path(j.stderr_path), j.pid, j.status, j.submitted_at, j.started_at, j.finished_at,
        j.exit_code, j.timed_out, j.error, None if legacy else j.handle, None if legacy else j.backend,
    )  # fmt: skip


def llm_call_record(c: LLMCall) -> LLMCallRecord:
    return LLMCallRecord(
        c.id, c.run_id, c.idea_id, c.role, c.provider, c.model, c.prompt, c.response, c.input_tokens,
        c.output_tokens, c.cached_tokens, c.thinking_tokens, c.cost_usd, c.latency_s, c.error, c.extra,
        c.created_at,
    )  # fmt: skip
