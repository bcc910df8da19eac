"""Read-only views of a run for `idealab status` (and anyone else who wants the results)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from idealab.manifest import Goal
from idealab.search.journal import BASELINE_EPOCH, Journal
from idealab.store import IdeaRecord, RunRecord, Store


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


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


def load_view(store: Store) -> RunView:
    run = store.get_run()
    if run is None:
        raise LookupError("this work directory holds no run yet")
    goal = Goal(run.manifest["metric"]["goal"])
    return RunView(run, Journal.load(store, run.id, goal, run.baseline_metric))


def experiment_json(idea: IdeaRecord) -> dict[str, Any]:
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


def compute_used(store: Store) -> dict[str, float]:
    """Job-hours and GPU-hours of every job that ran (re-runs after a crash included)."""
    job_s = gpu_s = 0.0
    for job in store.jobs():
        if job.started_at is not None and job.finished_at is not None:
            duration = max(0.0, job.finished_at - job.started_at)
            job_s += duration
            gpu_s += duration * len(job.gpu_ids)
    return {"job_hours": round(job_s / 3600, 4), "gpu_hours": round(gpu_s / 3600, 4)}


def status_json(store: Store) -> dict[str, Any]:
    view = load_view(store)
    journal = view.journal
    best = journal.best()
    baseline_rows = journal.in_epoch(BASELINE_EPOCH)
    return {
        "run": {
            "id": view.run.id,
            "env": view.run.env_name,
            "preset": view.run.preset,
            "created_at": iso(view.run.created_at),
            "config": view.run.config,
            "schema_version": store.schema_version(),
        },
        "metric": {"name": view.run.manifest["metric"]["name"], "goal": view.goal.value},
        "baseline": view.baseline,
        "baseline_experiment": experiment_json(baseline_rows[0]) if baseline_rows else None,
        "best": None if best is None else {**experiment_json(best), "beats_baseline": journal.beats_baseline(best)},
        "counts": journal.counts(),
        "cost_usd": store.total_cost(view.run.id),
        "compute": compute_used(store),
        "seed": view.run.config.get("seed"),
        "experiments": [experiment_json(i) for i in view.experiments],
    }
