"""The records the run database gives its callers: frozen values, never ORM objects (no SQLAlchemy here,
so read-only commands that use `idealab.store.reader` start without it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from idealab.status import Status


@dataclass(frozen=True)
class RunRecord:
    id: int
    created_at: float
    env_name: str
    env_root: str
    preset: str | None
    config: dict[str, Any]
    manifest: dict[str, Any]
    baseline_metric: float | None
    baseline_status: str | None  # a Status value, or another word the caller chose (e.g. "given")
    baseline_reason: str | None


@dataclass(frozen=True)
class IdeaRecord:
    id: int
    run_id: int
    epoch: int
    idx: int
    kind: str
    text: str
    ideator: str
    payload: dict[str, Any]
    status: Status
    metric: float | None
    reason: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    applied_diff: str | None
    final_diff: str | None


class IdeaSummary(NamedTuple):
    """The columns of an idea that listings show (no payload, no diffs): cheap to read by the ten thousand."""

    id: int
    epoch: int
    idx: int
    kind: str
    text: str
    status: Status
    metric: float | None
    reason: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None


class LLMCallSummary(NamedTuple):
    """An LLM call without its prompt and answer: what cost and count listings need, by the ten thousand."""

    id: int
    idea_id: int | None
    role: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    error: str | None
    extra: dict[str, Any] | None
    created_at: float


class JobSummary(NamedTuple):
    """A job as the views list it: how it ran and ended, and its log files (paths as stored, not `Path`s:
    ten thousand `Path`s cost a noticeable share of a report). No command, workspace, pid or handle."""

    id: int
    idea_id: int
    job_key: str
    gpu_ids: tuple[int, ...]
    stdout_path: str
    stderr_path: str
    status: str
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    timed_out: bool
    error: str | None


@dataclass(frozen=True)
class CodeChangeRecord:
    id: int
    idea_id: int
    attempt: int
    sample: int
    format: str
    diff: str
    outcome: str
    error: str | None
    created_at: float


@dataclass(frozen=True)
class JobRecord:
    id: int
    idea_id: int
    job_key: str
    command: str
    gpu_ids: tuple[int, ...]
    workspace: Path
    stdout_path: Path
    stderr_path: Path
    pid: int | None
    status: str  # ready / running (Status values) until the caller records how it ended
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    timed_out: bool
    error: str | None
    handle: str | None = None  # the backend's durable id (None: not started, or stored by an older idealab)
    backend: str | None = None


@dataclass(frozen=True)
class JobEnd:
    """How a job ended, as `Store.finish_idea` records it together with the idea's result."""

    finished_at: float
    exit_code: int | None
    timed_out: bool
    status: str
    error: str | None = None


@dataclass(frozen=True)
class LLMCallRecord:
    id: int
    run_id: int
    idea_id: int | None
    role: str
    provider: str
    model: str
    prompt: str
    response: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int | None
    thinking_tokens: int | None
    cost_usd: float | None
    latency_s: float
    error: str | None
    extra: dict[str, Any] | None
    created_at: float


def gpu_ids_of(stored: str) -> tuple[int, ...]:
    """The GPU ids of a job as stored ("0,1", or "" for none)."""
    return tuple(int(g) for g in stored.split(",") if g)
