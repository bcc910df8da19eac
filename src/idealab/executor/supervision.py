"""The supervisor's job.json built from a job's spec: one function for every backend (local, Slurm, Ray)."""

from __future__ import annotations

from pathlib import Path

from idealab.executor.base import JobSpec
from idealab.executor.bwrap import job_home
from idealab.executor.supervisor import SupervisorSpec


def disk_watch(limit_mb: int | None, workspace: Path, job_dir: Path, sandboxed: bool) -> tuple[int | None, list[str]]:
    """The disk cap and the directories it covers: the job's copy, and its HOME outside the sandbox (inside,
    HOME is in the private /tmp, a tmpfs of the cap's size)."""
    if limit_mb is None:
        return None, []
    paths = [str(workspace)] if sandboxed else [str(workspace), job_home(job_dir, sandboxed)]
    return limit_mb, paths


def supervisor_spec(
    spec: JobSpec,
    wrapper: list[str],
    sandboxed: bool,
    *,
    grace_s: float,
    log_cap_bytes: int,
    max_metric_values: int,
    max_processes: int | None,
    disk: tuple[int | None, list[str]] = (None, []),
    score: dict[str, object] | None = None,
) -> SupervisorSpec:
    """What the supervisor runs for `spec`: its command under `wrapper` (the sandbox), the backend's grace,
    log cap and metric settings, the limits the supervisor itself enforces (processes, disk), the training
    budget, and the scoring step (`score`, from `scoring.supervisor_score_step`)."""
    budget = spec.budget
    return SupervisorSpec(
        job_id=spec.job_id,
        command=spec.command,
        cwd=str(spec.workspace),
        timeout_s=spec.timeout_s,
        grace_s=grace_s,
        log_cap_bytes=log_cap_bytes,
        metric_name=spec.metric_name,
        metric_regex=spec.metric_regex,
        max_metric_values=max_metric_values,
        wrapper=wrapper,
        sandboxed=sandboxed,
        max_processes=max_processes,
        max_disk_mb=disk[0],
        disk_paths=disk[1],
        budget_s=budget.seconds if budget is not None else None,
        budget_clock=budget.clock if budget is not None else "wall",
        budget_grace_s=budget.grace_s if budget is not None else grace_s,
        score=score,
    )
