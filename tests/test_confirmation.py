"""Results you can trust, on the noisy environment (loss = 2 - GAIN + seeded Gaussian noise of sd 0.1).

Real subprocesses through the local backend; the noise is drawn from each job's IDEALAB_SEED by the
environment's read-only score.py, so the seeds the loop hands out decide every outcome here.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.ideators.base import IdeaProposal, IdeationRequest
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.manifest import Goal, load_manifest
from idealab.search.journal import BASELINE_EPOCH, CONFIRM_EPOCH, Journal, Verdict
from idealab.search.loop import Search, SearchConfig, trial_seed
from idealab.status import Status
from idealab.store import IdeaRecord, Store
from jobprocs import job_processes
from searchrun import run_to_end

NOISY = Path(__file__).parent / "envs" / "noisy"
SD = 0.1
sys.path.insert(0, str(NOISY))
from score import noise  # noqa: E402  (the environment's own noise, to pick seeds with known luck)


def change(name: str, value: float) -> str:
    line = 7 if name == "GAIN" else 8
    return f"--- a/train.py\n+++ b/train.py\n@@ -{line},1 +{line},1 @@\n-{name} = 0.0\n+{name} = {value}\n"


ZERO_EFFECT = ("Set DUMMY to 1 (it has no effect).", change("DUMMY", 1.0))
REAL_EFFECT = (f"Set GAIN to {3 * SD} (a true gain of 3 noise sd).", change("GAIN", 3 * SD))


class FixedIdeator:
    """Proposes the given ideas, in order, in epoch 0."""

    name = "fixed"

    def __init__(self, ideas: list[tuple[str, str]], one_per_epoch: bool = False) -> None:
        self.ideas = ideas
        self.one_per_epoch = one_per_epoch  # epoch t proposes idea t only

    async def propose(self, manifest, request: IdeationRequest) -> list[IdeaProposal]:
        if self.one_per_epoch:
            return [IdeaProposal(*self.ideas[request.epoch])]
        fresh = [(text, diff) for text, diff in self.ideas if text not in request.avoid]  # batches go on in order
        return [IdeaProposal(text, diff) for text, diff in fresh[: request.count]]


def run_search(
    tmp_path: Path, ideas: list[tuple[str, str]], slots: int = 2, one_per_epoch: bool = False, **config
) -> tuple[Store, int, Search]:
    store = Store.open(tmp_path / "run")
    run = store.create_run("noisy", str(NOISY), None, {}, {"metric": {"goal": "minimize", "name": "loss"}})
    backend = LocalBackend(SlotPool.cpu_only(slots))
    epochs, per_epoch = (len(ideas), 1) if one_per_epoch else (1, len(ideas))
    settings = SearchConfig(epochs=epochs, ideas_per_epoch=per_epoch, **config)
    search = Search(
        load_manifest(NOISY), store, run.id, backend, FixedIdeator(ideas, one_per_epoch), ReadyDiffImplementer(),
        settings, tmp_path / "run", job_slots=slots,
    )  # fmt: skip

    run_to_end(search, backend)
    assert search.internal_errors == []
    return store, run.id, search


def journal(store: Store, run_id: int, confirm_seeds: int = 3) -> Journal[IdeaRecord]:
    return Journal.load(store, run_id, Goal.MINIMIZE, None, confirm_seeds)


def lucky_run_seed(position: int) -> int:
    """A run seed whose first run of the idea at (epoch 0, idx position) draws noise below -2 sd."""
    return next(s for s in range(10_000) if noise(trial_seed(s, 0, position, 0), SD) < -2 * SD)


@pytest.mark.slow
def test_a_lucky_zero_effect_idea_is_not_a_win_and_a_3_sd_effect_is(tmp_path):
    seed = lucky_run_seed(position=1)
    store, run_id, _ = run_search(tmp_path, [REAL_EFFECT, ZERO_EFFECT], seed=seed)
    j = journal(store, run_id)
    real, zero = j.experiments
    assert len(j.evidence.baseline_values) == 3 and j.baseline_sd is not None and j.baseline_sd > 0
    # the zero-effect idea's first run was lucky: a single-run search would have called it a win
    assert zero.metric is not None and j.baseline is not None and zero.metric < j.baseline
    assert journal(store, run_id, confirm_seeds=1).beats_baseline(zero)
    # confirmed over three seeds, the test says no
    assert j.estimate(zero).confirmed and j.estimate(zero).n == 3
    assert not j.beats_baseline(zero) and j.verdict(zero) is not Verdict.BEATS
    assert j.estimate(real).confirmed and j.beats_baseline(real)
    assert j.winners() == [real] and j.confirmed_best() == real
    est = j.estimate(real)
    assert est.ci is not None and est.ci[0] < est.mean < est.ci[1]
    assert len({t.seed for t in est.trials}) == 3  # three different seeds


@pytest.mark.slow
def test_confirm_top_0_restores_single_run_behaviour(tmp_path):
    seed = lucky_run_seed(position=0)
    store, run_id, _ = run_search(tmp_path, [ZERO_EFFECT], seed=seed, confirm_top=0)
    assert store.ideas(run_id, epoch=CONFIRM_EPOCH) == []
    j = journal(store, run_id, confirm_seeds=1)
    (zero,) = j.experiments
    assert len(j.estimate(zero).trials) == 1 and not j.estimate(zero).confirmed
    assert j.beats_baseline(zero)  # one lucky run against the measured mean: the single-run claim


@pytest.mark.slow
def test_unconfirmed_results_are_never_called_wins(tmp_path):
    # confirmation on, but the zero-effect idea (the next epoch's, after the real one) stays outside the top 1
    store, run_id, _ = run_search(
        tmp_path, [REAL_EFFECT, ZERO_EFFECT], slots=1, one_per_epoch=True, seed=0, confirm_top=1, next_epoch_at=1.0
    )
    j = journal(store, run_id)
    real, zero = j.experiments
    assert len(j.estimate(zero).trials) == 1 and j.verdict(zero) is Verdict.UNCONFIRMED
    assert "unconfirmed (1 run)" in j.label(zero, "loss")
    assert j.estimate(real).n == 3


@pytest.mark.slow
def test_confirmation_jobs_take_slots_ahead_of_new_ideas(tmp_path):
    ideas = [(f"Set GAIN to {g}.", change("GAIN", g)) for g in (0.3, 0.2, 0.1)]
    store, run_id, _ = run_search(tmp_path, ideas, slots=1, seed=1, baseline_runs=2, confirm_top=1)
    epochs = {i.id: (i.epoch, i.payload.get("confirms")) for i in store.ideas(run_id)}
    order = [epochs[job.idea_id] for job in sorted(store.jobs(), key=lambda job: job.started_at or 0)]
    assert [e for e, _ in order[:2]] == [BASELINE_EPOCH, BASELINE_EPOCH]  # the baseline comes first
    first_idea = next(k for k, job in enumerate(order) if job[0] == 0)
    confirmed = min(store.ideas(run_id, epoch=0), key=lambda i: i.started_at or 0).id  # the first idea run
    # the next two jobs after the first idea's are its confirmation runs, though two ideas were waiting
    assert order[first_idea + 1 : first_idea + 3] == [(CONFIRM_EPOCH, confirmed)] * 2
    assert all(i.status is Status.OK for i in store.ideas(run_id))


def cli(workdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "idealab", "run", "--env", str(NOISY), "--preset", "slow", "--epochs", "1",
        "--ideas-per-epoch", "4", "--slots", "2", "--seed", "3", "--confirm-top", "2", "--workdir", str(workdir),
        "--quiet",
    ]  # fmt: skip


def rows(db: Path, where: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(f"SELECT id, status FROM ideas WHERE {where}").fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_when",
    [
        pytest.param("epoch = -1 AND status = 'running'", id="during-baseline-repeats"),
        pytest.param("epoch = -2 AND status = 'running'", id="during-confirmations"),
    ],
)
def test_baseline_repeats_and_confirmations_survive_sigkill_without_duplicate_trials(tmp_path, kill_when):
    workdir = tmp_path / "run"
    db = workdir / "idealab.db"
    proc = subprocess.Popen(cli(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline:  # a test watching a subprocess from outside: no event to wait on
        if rows(db, kill_when) and job_processes(workdir):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run never reached the kill point: " + proc.stderr.read().decode()[-2000:])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    done = subprocess.run(cli(workdir), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "measured over 3 run(s)" in done.stdout and "confirmed best" in done.stdout

    with sqlite3.connect(db) as conn:
        ideas = conn.execute("SELECT id, epoch, idx, status, metric, payload FROM ideas").fetchall()
        jobs = conn.execute("SELECT idea_id, status FROM jobs").fetchall()
    # the killed run's jobs were re-run, or their results collected where they ended meanwhile; either way
    # one result per trial: every run (baseline repeat, idea, confirmation) has exactly one job that counted
    for idea_id, *_ in ideas:
        assert sum(1 for i, status in jobs if i == idea_id and status != "abandoned") == 1, idea_id
    baseline = [row for row in ideas if row[1] == -1]
    assert len(baseline) == 3 and all(row[3] == "ok" for row in baseline)
    for _, _, _, _, metric, payload in baseline:  # a re-run job got the seed its trial was given
        assert metric == pytest.approx(2.0 + noise(json.loads(payload)["seed"], SD))
    trials = [json.loads(row[5]) for row in ideas if row[1] == -2]
    keys = [(t["confirms"], t["trial"]) for t in trials]
    assert trials and len(set(keys)) == len(keys) and {t["trial"] for t in trials} == {1, 2}
    assert all(row[3] == "ok" for row in ideas)
    assert job_processes(workdir) == []
