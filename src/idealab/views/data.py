"""The one place where the views read a run: a read-only store and the typed records derived from it.

The report, the live dashboard and the export all start from `load_snapshot`. The store is opened with
`RunReader.open`, and ok / best / verdicts come from the search's own journal, so the views agree with
`idealab status` and with what the search itself saw.
"""

from __future__ import annotations

import bisect
import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from idealab.gcpause import paused_gc
from idealab.manifest import Goal
from idealab.search.evidence import Evidence
from idealab.search.journal import BASELINE_EPOCH, Journal, confirm_seeds_of, trust_of
from idealab.status import Status
from idealab.store import IdeaRecord, JobSummary, LLMCallSummary, RunRecord
from idealab.store.reader import RunReader, RunReads
from idealab.store.schema import readonly_uri

LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 8_000


# ---- opening a run without writing it -----------------------------------------------------------------


def open_readonly(workdir: Path) -> RunReader:
    """The run's database, read-only (no migration, no write, no SQLAlchemy: `RunReader`)."""
    return RunReader.open(workdir)


def connect_readonly(db: Path, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    """A plain read-only SQLite connection to the run database (the dashboard asks it for data_version)."""
    conn = sqlite3.connect(readonly_uri(db), uri=True, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA query_only=ON")
    return conn


def read_snapshot(workdir: Path, with_values: bool = False) -> RunSnapshot:
    """Open the run in `workdir` read-only, read everything the views show, close it."""
    store = open_readonly(workdir)
    try:
        return load_snapshot(store, workdir, with_values=with_values)
    finally:
        store.close()


@contextmanager
def opened_snapshot(workdir: Path) -> Iterator[RunSnapshot]:
    """The run in `workdir`, read-only, with its diffs read on demand (`RunSnapshot.diff_of`) while open:
    what a view that shows the diffs of a few of thousands of experiments reads (the report)."""
    store = open_readonly(workdir)
    try:
        yield load_snapshot(store, workdir, diffs=False)
    finally:
        store.close()


# ---- records --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A metric as the views show it. Today the single run's value, without an interval. Hook for confirmed
    results (repeated runs): set `low`/`high`/`runs` here and every plot draws the interval."""

    value: float | None
    low: float | None = None
    high: float | None = None
    runs: int = 1


@dataclass(frozen=True)
class MetricPoint:
    name: str
    value: float | None  # NaN and infinities become None, so that JSON and Arrow carry them the same way
    step: int | None
    source: str


@dataclass(frozen=True)
class Trial:
    """One job of an experiment (an experiment re-runs after an orchestrator restart)."""

    job_key: str
    status: str
    exit_code: int | None
    timed_out: bool
    gpu_ids: tuple[int, ...]
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    values: tuple[MetricPoint, ...] = ()

    @property
    def duration_s(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return max(0.0, self.finished_at - self.started_at)


@dataclass(frozen=True)
class LLMSpend:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    models: tuple[str, ...] = ()


NO_SPEND = LLMSpend()


@dataclass(frozen=True)
class Experiment:
    id: int
    epoch: int
    idx: int
    kind: str
    ideator: str
    idea: str
    status: Status
    measured: Measured
    reason: str | None
    parents: tuple[int, ...]
    payload: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    diff: str | None  # the job's copy against the environment (what ran); None also when not read (`diff_of`)
    applied_diff: str | None  # the change as the implementer's accepted edit (the same)
    changed: bool  # the implementer's change was applied (there is an applied diff)
    trials: tuple[Trial, ...]
    llm: LLMSpend
    last_job: JobSummary | None  # its logs are read on demand (`log_tail`): ten thousand tails are not shown at once
    job_hours: float  # wall-clock hours of its jobs (`trials`), summed once: the listing, epochs and totals ask
    gpu_hours: float  # job hours times the GPUs each held

    @property
    def metric(self) -> float | None:
        return self.measured.value

    @property
    def implemented(self) -> bool:
        return self.changed or self.kind == "baseline"

    @property
    def ran(self) -> bool:
        return any(t.started_at is not None for t in self.trials)


@dataclass(frozen=True)
class IdeationCall:
    """An LLM call not tied to one experiment (ideation), placed in the epoch whose ideas followed it."""

    created_at: float
    epoch: int
    role: str
    model: str
    cost_usd: float


@dataclass(frozen=True)
class RunSnapshot:
    run: RunRecord
    workdir: Path
    schema_version: str
    metric_name: str
    goal: Goal
    baseline: Measured
    baseline_experiment: Experiment | None
    experiments: list[Experiment]  # epoch >= 0, ordered by (epoch, idx)
    ideation: list[IdeationCall] = field(default_factory=list)
    # the baseline's repeats and each idea's confirmation runs: verdicts need them (docs/statistics.md)
    evidence: Evidence = field(default_factory=Evidence)
    repeats: list[Experiment] = field(default_factory=list)  # every baseline and confirmation run (epoch < 0)
    # set when the experiments were read without their diffs (`load_snapshot(diffs=False)`): reads them
    diffs: DiffSource | None = field(default=None, compare=False)

    def diff_of(self, e: Experiment) -> str | None:
        """The experiment's diff (what ran), read from the store if the snapshot was loaded without."""
        return e.diff if self.diffs is None else self.diffs.diff(e.id)

    @cached_property
    def journal(self) -> Journal[Experiment]:
        """ok / ranked / best / winners / verdicts, as the search itself derives them (built once)."""
        return Journal.of(self.experiments, self.goal, self.baseline.value, self.evidence)

    def ok(self) -> list[Experiment]:
        return self.journal.ok()

    def best(self) -> Experiment | None:
        return self.journal.best()

    def beats_baseline(self, e: Experiment) -> bool:
        return self.journal.beats_baseline(e)

    def gpus_used(self) -> list[int]:
        everyone = [*self.experiments, *([self.baseline_experiment] if self.baseline_experiment else [])]
        return sorted({g for e in everyone for t in e.trials for g in t.gpu_ids})


class DiffSource:
    """The diffs of a snapshot loaded without them, read from its (open) store when asked and kept.

    `load` reads many in one query (what a page is about to show); `diff` reads one if not loaded yet."""

    def __init__(self, store: RunReads) -> None:
        self._store = store
        self._known: dict[int, str | None] = {}

    def load(self, idea_ids: Iterable[int]) -> None:
        missing = [i for i in idea_ids if i not in self._known]
        found = self._store.idea_diffs(missing)
        for idea_id in missing:  # an idea read before was never deleted; a missing one has no diff
            applied, final = found.get(idea_id, (None, None))
            self._known[idea_id] = final if final is not None else applied

    def diff(self, idea_id: int) -> str | None:
        if idea_id not in self._known:
            self.load([idea_id])
        return self._known[idea_id]


# ---- building a snapshot --------------------------------------------------------------------------------


def load_snapshot(store: RunReads, workdir: Path, with_values: bool = False, diffs: bool = True) -> RunSnapshot:
    """Everything the views show about the run in `store`; `with_values` adds every reported metric value.

    `diffs=False` reads no diff (the largest columns by far): `RunSnapshot.diff_of` reads one on demand
    from `store`, which must stay open as long as the snapshot is used so."""
    with paused_gc():
        return _load_snapshot(store, workdir, with_values, diffs)


def _load_snapshot(store: RunReads, workdir: Path, with_values: bool, diffs: bool) -> RunSnapshot:
    run = store.get_run()
    if run is None:
        raise LookupError("this work directory holds no run yet")
    ideas = store.ideas(run.id, diffs=diffs)
    changed = None if diffs else store.changed_ideas(run.id)
    jobs_by_idea: dict[int, list[JobSummary]] = defaultdict(list)
    for job in store.job_summaries():
        jobs_by_idea[job.idea_id].append(job)
    calls = store.llm_call_summaries(run.id)
    spend = _spend_by_idea(calls)
    experiments = [
        _experiment(
            idea,
            jobs_by_idea.get(idea.id, []),
            spend.get(idea.id, NO_SPEND),
            store,
            with_values,
            idea.applied_diff is not None if changed is None else idea.id in changed,
        )
        for idea in ideas
    ]
    baseline_rows = [e for e in experiments if e.epoch == BASELINE_EPOCH]  # (confirmation runs: epoch -2)
    goal = Goal(run.manifest["metric"]["goal"])
    suspects = trust_of(run, store.idea_audits(run.id))  # the metric's bound, the auditor and its verdicts
    trust = Journal.of_records(ideas, goal, run.baseline_metric, confirm_seeds_of(run.config), suspects)
    return RunSnapshot(
        run=run,
        workdir=workdir,
        schema_version=store.schema_version(),
        metric_name=str(run.manifest["metric"]["name"]),
        goal=Goal(run.manifest["metric"]["goal"]),
        baseline=Measured(_finite(trust.baseline)),  # the measured repeats' mean (or a given value)
        baseline_experiment=baseline_rows[0] if baseline_rows else None,
        experiments=[e for e in experiments if e.epoch >= 0],
        ideation=_ideation_calls(calls, ideas),
        evidence=trust.evidence,
        repeats=[e for e in experiments if e.epoch < 0],
        diffs=None if diffs else DiffSource(store),
    )


def _experiment(
    idea: IdeaRecord,
    jobs: list[JobSummary],
    llm: LLMSpend,
    store: RunReads,
    with_values: bool,
    changed: bool,
) -> Experiment:
    trials = tuple(_trial(job, store.metric_values(job.job_key) if with_values else ()) for job in jobs)
    job_s = gpu_s = 0.0
    for t in trials:
        job_s += t.duration_s
        gpu_s += t.duration_s * len(t.gpu_ids)
    parents = idea.payload.get("parents") or ()
    return Experiment(
        id=idea.id,
        epoch=idea.epoch,
        idx=idea.idx,
        kind=idea.kind,
        ideator=idea.ideator,
        idea=idea.text,
        status=idea.status,
        measured=Measured(_finite(idea.metric)),
        reason=idea.reason,
        parents=tuple(int(p) for p in parents),
        payload=idea.payload,
        created_at=idea.created_at,
        started_at=idea.started_at,
        finished_at=idea.finished_at,
        attempts=idea.attempts,
        diff=idea.final_diff if idea.final_diff is not None else idea.applied_diff,
        applied_diff=idea.applied_diff,
        changed=changed,
        trials=trials,
        llm=llm,
        last_job=jobs[-1] if jobs else None,
        job_hours=job_s / 3600,
        gpu_hours=gpu_s / 3600,
    )


def _finite(value: float | None) -> float | None:
    # NaN and infinities are not numbers a plot or a JSON reader can take; the status says what happened.
    return value if value is not None and math.isfinite(value) else None


def _trial(job: JobSummary, values: Iterable[Any]) -> Trial:
    points = tuple(MetricPoint(v.name, _finite(v.value), v.step, v.source) for v in values)
    return Trial(
        job.job_key, job.status, job.exit_code, job.timed_out, job.gpu_ids, job.submitted_at, job.started_at,
        job.finished_at, job.error, points,
    )  # fmt: skip


def _spend_by_idea(calls: list[LLMCallSummary]) -> dict[int, LLMSpend]:
    spend: dict[int, LLMSpend] = {}
    for call in calls:  # one pass, summed in the calls' order (most ideas have one call)
        if call.idea_id is None:
            continue
        was = spend.get(call.idea_id, NO_SPEND)
        spend[call.idea_id] = LLMSpend(
            calls=was.calls + 1,
            input_tokens=was.input_tokens + call.input_tokens,
            output_tokens=was.output_tokens + call.output_tokens,
            cost_usd=was.cost_usd + (call.cost_usd or 0.0),
            models=was.models if call.model in was.models else tuple(sorted((*was.models, call.model))),
        )
    return spend


def _ideation_calls(calls: list[LLMCallSummary], ideas: list[IdeaRecord]) -> list[IdeationCall]:
    # Ideation calls carry no idea id. The loop stores an epoch's ideas right after the call that proposed
    # them and ideates one epoch at a time, so a call belongs to the epoch of the first idea stored after it.
    timeline = sorted((i.created_at, i.epoch) for i in ideas if i.epoch >= 0)
    times = [t for t, _ in timeline]
    out = []
    for call in calls:
        if call.idea_id is not None:
            continue
        at = bisect.bisect_left(times, call.created_at)
        epoch = timeline[at][1] if at < len(timeline) else (timeline[-1][1] if timeline else 0)
        out.append(IdeationCall(call.created_at, epoch, call.role, call.model, call.cost_usd or 0.0))
    return out


def log_tail(workdir: Path, e: Experiment, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the stdout and stderr of the experiment's last job ("" when it has none)."""
    job = e.last_job
    if job is None:
        return ""
    idea_id = e.id
    parts = []
    for name, path in (("stdout", job.stdout_path), ("stderr", job.stderr_path)):
        stored = Path(path)
        moved = workdir / "experiments" / f"{idea_id:05d}" / "logs" / job.job_key / stored.name
        text = _tail(_locate(stored, moved), lines)
        if text.strip():
            parts.append(f"== {name} ({job.job_key}) ==\n{text.rstrip()}")
    return "\n".join(parts)


def _locate(stored: Path, in_workdir: Path) -> Path:
    """The stored log path, or the same file under this workdir when the run directory was moved."""
    return stored if stored.is_file() else in_workdir


def _tail(path: Path, lines: int) -> str:
    try:
        stat = path.stat()
    except OSError:
        return ""  # no log (never started, or removed): the view shows none
    return _tail_of(str(path), stat.st_mtime_ns, stat.st_size, lines)


@lru_cache(maxsize=8192)  # keyed on the file's mtime and size: a finished job's log is read once
def _tail_of(path: str, _mtime_ns: int, _size: int, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""  # no log (never started, or removed): the view shows none
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
