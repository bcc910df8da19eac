"""Read-only views of a run for `idealab status` (and anyone else who wants the results)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from idealab.baseline_reuse import REUSE_KEY
from idealab.gcpause import paused_gc
from idealab.manifest import Goal
from idealab.search import stats
from idealab.search.journal import BASELINE_EPOCH, CONFIRM_EPOCH, Entry, Journal, confirm_seeds_of
from idealab.store import IdeaRecord, IdeaSummary, RunRecord
from idealab.store.reader import RunReads

T = TypeVar("T")


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC, to the second (time.gmtime: twice as fast as datetime)."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


@dataclass(frozen=True)
class RunView:
    run: RunRecord
    journal: Journal[IdeaRecord]

    @property
    def goal(self) -> Goal:
        return self.journal.goal

    @property
    def baseline(self) -> float | None:
        return self.journal.baseline

    @property
    def experiments(self) -> list[IdeaRecord]:
        return self.journal.experiments


def load_view(store: RunReads) -> RunView:
    run = store.get_run()
    if run is None:
        raise LookupError("this work directory holds no run yet")
    goal = Goal(run.manifest["metric"]["goal"])
    return RunView(run, Journal.load(store, run.id, goal, run.baseline_metric, confirm_seeds_of(run.config)))


def baseline_json(journal: Journal[Any], run: RunRecord) -> dict[str, Any]:
    """The bar and its noise floor: the measured repeats, their mean, sd and intervals, and the manifest's
    reference value (shown beside the measured one, never used as the bar)."""
    values = list(journal.evidence.baseline_values)
    reused = run.config.get(REUSE_KEY)
    interval = stats.mean_interval(values)
    band = journal.noise_band
    return {
        "values": values,
        "n": len(values),
        "mean": journal.baseline,
        "sd": journal.baseline_sd,
        "ci_low": None if interval is None else interval[0],
        "ci_high": None if interval is None else interval[1],
        "noise_low": None if band is None else band[0],
        "noise_high": None if band is None else band[1],
        "source": "measured" if values else ("given" if journal.baseline is not None else "unknown"),
        "reference": run.manifest.get("metric", {}).get("baseline"),
        # repeats taken from an earlier run (--reuse-baseline): their number and its work directory
        "reused": len(reused["metrics"]) if reused else 0,
        "reused_from": reused["workdir"] if reused else None,
    }


def trust_json(journal: Journal[Any], idea: Entry) -> dict[str, Any]:
    """An experiment's trials and what they establish."""
    est = journal.estimate(idea)
    verdict = journal.verdict(idea)
    audit = journal.audit(idea)
    return {
        "trials": [{"seed": t.seed, "status": t.status.value, "metric": t.metric} for t in est.trials],
        "mean": est.mean,
        "ci_low": None if est.ci is None else est.ci[0],
        "ci_high": None if est.ci is None else est.ci[1],
        "confirmed": est.confirmed,
        "beats_baseline": journal.beats_baseline(idea),
        "verdict": None if verdict is None else verdict.value,
        "p_value": journal.p_value(idea) if est.confirmed else None,
        "inside_noise_floor": journal.inside_noise(idea),
        # `jump` / `near-bound` / `beyond-bound` (why it is suspect), then `suspect`, `cleared` or `hack`
        "flags": journal.flags(idea),
        "audit": None if audit is None else audit.to_json(),
    }


def experiment_json(idea: IdeaRecord | IdeaSummary) -> dict[str, Any]:
    return {
        "id": idea.id,
        "epoch": idea.epoch,
        "kind": idea.kind,
        "idea": idea.text,
        "status": idea.status.value,
        "metric": idea.metric,
        "reason": idea.reason,
        "attempts": idea.attempts,
        "created_at": iso(idea.created_at),
        "started_at": iso(idea.started_at),
        "finished_at": iso(idea.finished_at),
    }


def compute_used(store: RunReads) -> dict[str, Any]:
    """Job-hours and GPU-hours of every job that ran (re-runs after a crash included), in total and by
    purpose: baseline repeats, search (each idea's first run) and confirmation runs."""
    job_s, gpu_s = store.compute_seconds()
    parts = {"baseline": store.compute_seconds(BASELINE_EPOCH), "confirmation": store.compute_seconds(CONFIRM_EPOCH)}
    search = (job_s - sum(p[0] for p in parts.values()), gpu_s - sum(p[1] for p in parts.values()))
    by_purpose = {"baseline": parts["baseline"], "search": search, "confirmation": parts["confirmation"]}
    return {
        "job_hours": round(job_s / 3600, 4),
        "gpu_hours": round(gpu_s / 3600, 4),
        "by_purpose": {
            name: {"job_hours": round(max(0.0, j) / 3600, 4), "gpu_hours": round(max(0.0, g) / 3600, 4)}
            for name, (j, g) in by_purpose.items()
        },
    }


def ideation_counts(store: RunReads, run_id: int) -> dict[str, int]:
    """The LLM ideator's calls: answers, how many held no idea (parse failures), how many were read as
    structured output, and calls that failed outright. Calls recorded before answers were noted count as
    answers only."""
    counts = {"calls": 0, "failed_calls": 0, "answers": 0, "without_ideas": 0, "structured": 0}
    for call in store.llm_call_summaries(run_id, role="ideator"):
        counts["calls"] += 1
        if call.error is not None:
            counts["failed_calls"] += 1
            continue
        counts["answers"] += 1
        extra = call.extra or {}
        counts["without_ideas"] += int(extra.get("ideas") == 0)
        counts["structured"] += int(extra.get("format") == "structured")
    return counts


def status_json(store: RunReads, limit: int = 0, offset: int = 0) -> dict[str, Any]:
    """Everything `status --json` prints. The journal holds listing rows only (no payloads or diffs), so a
    run of ten thousand experiments is one light query.

    `experiments` lists the latest `limit` experiments (0: all) after skipping the `offset` latest, in
    (epoch, idx) order; `experiments_total` counts them all. Everything else is about the whole run."""
    with paused_gc():
        return _status_json(store, limit, offset)


def _status_json(store: RunReads, limit: int, offset: int) -> dict[str, Any]:
    run = store.get_run()
    if run is None:
        raise LookupError("this work directory holds no run yet")
    goal = Goal(run.manifest["metric"]["goal"])
    journal = Journal.light(store, run, goal)
    best, confirmed = journal.search_best(), journal.confirmed_best()
    baseline_rows = journal.in_epoch(BASELINE_EPOCH)
    return {
        "run": {
            "id": run.id,
            "env": run.env_name,
            "preset": run.preset,
            "created_at": iso(run.created_at),
            "config": run.config,
            "schema_version": store.schema_version(),
        },
        "metric": {"name": run.manifest["metric"]["name"], "goal": goal.value},
        "baseline": baseline_json(journal, run),
        "baseline_experiment": experiment_json(baseline_rows[0]) if baseline_rows else None,
        "baseline_experiments": [experiment_json(i) for i in baseline_rows],
        # the best first (search-time) result is biased upward (a maximum over noisy runs): shown beside
        # the best confirmed mean, which is the claim
        "best": None if best is None else {**experiment_json(best), **trust_json(journal, best)},
        "confirmed_best": None
        if confirmed is None
        else {**experiment_json(confirmed), **trust_json(journal, confirmed)},
        "confirm_seeds": journal.evidence.confirm_seeds,
        "counts": journal.counts(),
        "cost_usd": store.total_cost(run.id),
        "ideation": ideation_counts(store, run.id),
        "compute": compute_used(store),
        "seed": run.config.get("seed"),
        "experiments": [
            {**experiment_json(i), **trust_json(journal, i)} for i in latest(journal.experiments, limit, offset)
        ],
        "experiments_total": len(journal.experiments),
    }


def latest(items: list[T], limit: int, offset: int) -> list[T]:
    """The `limit` items before the last `offset` (0: every one before them), in their order."""
    end = len(items) - offset
    if end <= 0:
        return []
    return items[max(0, end - limit) : end] if limit else items[:end]


def write_json(data: Mapping[str, Any], stream: TextIO) -> None:
    """Write `data` as JSON, one top-level field per line.

    Each field is one call of json's C encoder (no indent): ten thousand experiments take a fraction of a
    second, where a pretty-printer (rich's, or json's indent, which is pure Python) took seconds."""
    fields = [f"{json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()]
    stream.write("{\n  " + ",\n  ".join(fields) + "\n}\n")
