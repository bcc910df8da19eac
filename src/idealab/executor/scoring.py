"""The scoring contract's side of a job (the manifest's `[score]` and `[budget]`).

Training runs in the job's copy and leaves an artefact in its output directory (IDEALAB_OUTPUT_DIR,
outside the copy); then the job's supervisor runs the scoring command in a fresh scoring directory,
prepared here before the job starts: pristine copies of the protected files (readonly and hidden, from the
environment's directory, which no job can see) plus the editable files as the job is about to run them.
Both directories live in the job's log directory, which the training's sandbox covers. Scoring has a
sandbox of its own: the training copy is out of its view, the artefact read-only, the private data visible.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from idealab.executor.base import JobSpec, ScoringSpec
from idealab.executor.bwrap import Limits, sandbox_wrapper

OUTPUT_DIR_VAR = "IDEALAB_OUTPUT_DIR"  # the training's artefact goes here
BUDGET_VAR = "IDEALAB_BUDGET_S"
BUDGET_CLOCK_VAR = "IDEALAB_BUDGET_CLOCK"
ARTEFACT_DIR_VAR = "IDEALAB_ARTEFACT_DIR"  # scoring reads the artefact from here (read-only)
TRAINING_ONLY_VARS = (OUTPUT_DIR_VAR, BUDGET_VAR, BUDGET_CLOCK_VAR)
ARTEFACT_DIR = "artefact"
SCORING_DIR = "scoring"
TAMPERED_PREFIX = "idealab-tampered:"  # a scorer that finds what it relies on replaced prints this line


def artefact_dir(log_dir: Path) -> Path:
    return log_dir / ARTEFACT_DIR


def scoring_dir(log_dir: Path) -> Path:
    return log_dir / SCORING_DIR


def prepare_scoring(
    root: Path, workspace: Path, log_dir: Path, protected: Sequence[str], editable: Sequence[str]
) -> None:
    """A fresh, empty artefact directory and a fresh scoring directory for the job logged in `log_dir`."""
    for directory in (artefact_dir(log_dir), scoring_dir(log_dir)):
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
    dest = scoring_dir(log_dir)
    for source, names in ((root, protected), (workspace, editable)):
        for rel in names:
            if (source / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, dest / rel)


def supervisor_score_step(
    spec: JobSpec,
    log_dir: Path,
    gpu_ids: Sequence[int],
    sandboxed: bool,
    limits: Limits,
    conceal: Sequence[Path] = (),
) -> dict[str, Any] | None:
    """The `score` entry of the supervisor's job.json (None without a scoring step): the scoring command
    with its own sandbox (the backend's limits and concealed directories added to the scoring policy)."""
    scoring: ScoringSpec | None = spec.scoring
    if scoring is None:
        return None
    policy = replace(scoring.sandbox, limits=scoring.sandbox.limits.merged(limits),
                     conceal=(*scoring.sandbox.conceal, *conceal))  # fmt: skip
    return {
        "command": scoring.command,
        "cwd": str(scoring.workspace),
        "timeout_s": scoring.timeout_s,
        "wrapper": sandbox_wrapper(policy, scoring.workspace, log_dir, gpu_ids, sandboxed),
        "sandboxed": sandboxed,
        "env": dict(scoring.env),
        "unset": list(scoring.unset),
    }
