"""metric.partial_on_timeout: a run stopped by its time limit is scored from what it printed before."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from idealab.executor.local import LocalBackend
from idealab.executor.runner import Outcome, run_job
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.manifest import load_manifest
from idealab.status import Status

MANIFEST = """
name = "slow"
description = "Prints two evaluations, then hangs past its time limit."

[run]
command = "python train.py"
timeout_s = 2

[metric]
name = "acc"
goal = "maximize"
reduce = "max"
valid_range = [0.0, 1.0]
{partial}

[files]
editable = ["train.py"]
"""

TRAIN = """
import time
print('@metric {"name": "acc", "value": 0.4, "step": 0}', flush=True)
print('@metric {"name": "acc", "value": 0.6, "step": 2}', flush=True)
time.sleep(60)
"""


def run(tmp_path: Path, partial: str, train: str = TRAIN) -> Outcome:
    root = tmp_path / "env"
    root.mkdir()
    (root / "idealab.toml").write_text(MANIFEST.format(partial=partial))
    (root / "train.py").write_text(textwrap.dedent(train))
    manifest = load_manifest(root)
    workspace = copy_environment(root, tmp_path / "job" / "workspace")

    async def main() -> Outcome:
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=0.5)
        return await run_job(backend, manifest, workspace, "job-1", tmp_path / "job" / "logs")

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_without_the_option_a_timeout_has_no_metric(tmp_path: Path) -> None:
    outcome = run(tmp_path, "")
    assert outcome.status is Status.TIMEOUT and outcome.metric is None
    assert outcome.reason is not None and "partial" not in outcome.reason


def test_with_the_option_a_timeout_keeps_its_status_and_a_partial_metric(tmp_path: Path) -> None:
    outcome = run(tmp_path, "partial_on_timeout = true")
    assert outcome.status is Status.TIMEOUT and outcome.metric == 0.6  # the max of what was printed
    assert outcome.reason is not None and "metric is partial" in outcome.reason and "2 value(s)" in outcome.reason


def test_a_timeout_that_printed_nothing_stays_unscored(tmp_path: Path) -> None:
    outcome = run(tmp_path, "partial_on_timeout = true", "import time\ntime.sleep(60)\n")
    assert outcome.status is Status.TIMEOUT and outcome.metric is None


def test_a_partially_scored_timeout_counts_in_the_journal() -> None:
    from idealab.ideators.base import PastIdea
    from idealab.manifest import Goal
    from idealab.search.journal import Journal, Verdict

    entries = [PastIdea(1, 0, "a", Status.TIMEOUT, 0.6), PastIdea(2, 0, "b", Status.TIMEOUT, None),
               PastIdea(3, 0, "c", Status.OK, 0.5), PastIdea(4, 0, "d", Status.FAILED, None)]
    journal = Journal.of(entries, Goal.MAXIMIZE, 0.48)
    assert [e.id for e in journal.ranked()] == [1, 3]  # the unscored timeout and the crash are not ranked
    assert journal.verdict(entries[0]) is Verdict.BEATS and journal.verdict(entries[1]) is None
    assert [e.id for e in journal.winners()] == [1, 3]  # so it can enter the exploit pool, as in the paper
