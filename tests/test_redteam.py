"""The red-team corpus (tests/redteam): every hack ends caught, every legitimate change runs ok.

Cases run through the real path (change guards, sandboxed job, scoring, classification, store) with real
training subprocesses on the CPU. The default run takes one charlm hack of every class (charlm's budget is a
few CPU seconds) and the one class charlm has no case of on grpo; the whole corpus (about 50 jobs, nanogpt's
and grpo's included) runs with IDEALAB_REDTEAM_FULL=1 or through benchmarks/reward_hacks.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from idealab import guards
from idealab.data import DataError, shakespeare_path
from idealab.guards import check_changes
from idealab.manifest import load_manifest, resolve_env
from idealab.patching import apply_edit
from idealab.paths import data_dir
from redteam import corpus
from redteam.drive import Ended, run_cases

HACKS = corpus.load("hacks")
LEGIT = corpus.load("legit")
ENVS = {"charlm", "nanogpt", "grpo"}
BUSY_WALL_S = 600.0  # wall-clock limits of at least this: a busy test machine stretches the CPU budgets' wall time


def by_name(names: list[str]) -> list[corpus.Case]:
    cases = {c.name: c for c in HACKS + LEGIT}
    return [cases[n] for n in names]


def one_per_class(env: str) -> list[corpus.Case]:
    first: dict[str, corpus.Case] = {}
    for case in HACKS:
        if case.env == env and case.klass is not None:
            first.setdefault(case.klass, case)
    return list(first.values())


def needs_charlm_data() -> None:
    try:
        shakespeare_path()
    except DataError as exc:
        pytest.skip(f"Shakespeare data absent ({exc}); `make data` fetches it")


def needs_env_data(env: str) -> None:
    if not (data_dir() / env).is_dir():
        pytest.skip(f"{env} data absent from {data_dir()}; `make data` fetches it")


def run(cases: list[corpus.Case], tmp_path: Path, slots: int) -> list[Ended]:
    """The cases through the real path: two baseline runs (a noise floor for the suspect rule), no
    confirmation of winners (suspect results are still re-run)."""
    return run_cases(cases, tmp_path / "run", slots, baseline_runs=2, confirm_top=0, wall_limit_s=BUSY_WALL_S)


def static_checks_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the executor, the scorer and the suspect rule do on their own."""
    monkeypatch.setattr(guards, "check_static", lambda manifest, changes: [])


def assert_caught(ended: list[Ended], cases: list[corpus.Case]) -> None:
    rows = {row.case: row for row in ended}
    escaped = [f"{c.name}: {rows[c.name]}" for c in cases if c.hack and not rows[c.name].caught]
    reported = [c.name for c in cases if c.hack and rows[c.name].best]
    refused = [f"{c.name}: {rows[c.name]}" for c in cases if not c.hack and not rows[c.name].clean_ok]
    assert escaped == [], "hacks that ended ok and not under suspicion"
    assert reported == [], "hacks reported as the run's best"
    assert refused == [], "legitimate changes that did not end ok without flags"


# ------------------------------------------------------------------------------------ the corpus itself


def test_the_corpus_covers_every_class_in_every_environment() -> None:
    assert len(HACKS) >= 20 and len(LEGIT) >= 20
    assert {c.klass for c in HACKS} == set(corpus.CLASSES)
    assert {c.env for c in HACKS} == ENVS == {c.env for c in LEGIT}
    assert all(c.verify for c in HACKS), "every hack says how its effect was shown without the guards"
    assert not any(c.verify_env for c in LEGIT), "verify_env is the setting of a hack's showing"


def test_a_hacks_verify_env_is_read_as_variables_for_the_showing() -> None:
    (case,) = by_name(["nanogpt-train-on-val"])  # fixed steps: a loaded machine varies wall-clock training
    assert dict(case.verify_env) == {"NANOGPT_NUM_ITERATIONS": "100", "NANOGPT_TIME_LIMIT_S": "100000"}


@pytest.mark.parametrize("case", HACKS + LEGIT, ids=lambda c: c.name)
def test_each_case_applies_to_the_environment_as_it_is(case: corpus.Case, tmp_path: Path) -> None:
    """The anchors fit today's editable files, and the rendered diff applies through idealab's applier."""
    root = resolve_env(case.env)
    work = tmp_path / case.env
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("__pycache__"))
    result = apply_edit(work, corpus.render(case, root))
    assert result.ok, result.error
    assert {c.path for c in result.changes} == {e.file for e in case.edits}


@pytest.mark.parametrize("case", LEGIT, ids=lambda c: c.name)
def test_legitimate_changes_pass_the_change_guards(case: corpus.Case, tmp_path: Path) -> None:
    root = resolve_env(case.env)
    manifest = load_manifest(root, case.preset)
    work = tmp_path / case.env
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("__pycache__"))
    result = apply_edit(work, corpus.render(case, root))
    assert result.ok and check_changes(manifest, result.changes) is None


def test_an_anchor_that_is_not_in_exactly_one_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("x = 1\nx = 1\n")
    edit = corpus.Edit("train.py", "after", "x = 1", "y = 2")
    case = corpus.Case("twice", False, "charlm", None, None, "", (), None, (edit,))
    with pytest.raises(corpus.CorpusError, match="in 2 lines"):
        corpus.render(case, tmp_path)


# ------------------------------------------------------------------------------- run for real (CPU)


@pytest.mark.slow
def test_one_charlm_hack_of_every_class_is_caught_and_legitimate_changes_run_ok(tmp_path: Path) -> None:
    needs_charlm_data()
    cases = one_per_class("charlm") + by_name(["charlm-higher-lr", "charlm-weight-ema"])
    assert {c.klass for c in cases if c.hack} == set(corpus.CLASSES) - {"fake-helper"}
    assert_caught(run(cases, tmp_path, slots=2), cases)


# One charlm hack per class that reaches the job when the static checks let it through: what the executor's
# budget, the separate scoring and the suspect rule do on their own. (stdout-rescale is left out: the scorer
# writes its metric line past any wrapper, so the rescaled line never counts, and the run ends ok with its
# honest score; so is lingering-process, whose daemon the supervisor kills before scoring starts: see
# test_code_in_the_scoring_process_and_processes_left_by_training_never_move_the_score.)
BEHIND_STATIC = [
    "charlm-slow-clock", "charlm-forked-trainer", "charlm-patch-cross-entropy", "charlm-print-pieces",
    "charlm-lookahead-second-half", "charlm-train-on-val", "charlm-warm-start-cache",
    "charlm-exec-hidden-evaluator", "charlm-rewrite-prepare", "charlm-val-from-raw-file", "charlm-scorer-fd-scan",
]  # fmt: skip


@pytest.mark.slow
def test_behind_the_static_checks_the_executor_and_the_scorer_catch_every_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_charlm_data()
    static_checks_off(monkeypatch)
    cases = by_name(BEHIND_STATIC) + by_name(["charlm-rmsnorm"])
    assert {c.klass for c in cases if c.hack} == set(corpus.CLASSES) - {
        "fake-helper", "stdout-rescale", "lingering-process"}
    ended = run(cases, tmp_path, slots=2)
    assert [r.case for r in ended if r.status == "refused"] == []
    assert_caught(ended, cases)


# Code the scorer runs (the model code it imports) and a daemon left by training, past the static checks.
# charlm's scorer runs each call of the model code in a fresh process of its own that holds neither the
# scorer's stdout nor its targets nor its loss function and can keep nothing for its next call; the
# supervisor kills every process of training before scoring starts.
IN_SCORER = {
    "charlm-scorer-fd-scan": "failed",  # its line goes into the model process's answer pipe: garbage
    "charlm-scorer-self-restoring-patch": "tampered",  # seen in the model process after the forward pass
    "charlm-scorer-stdout-routes": "failed",  # fd 1 is stderr; a descriptor opened for writing is refused
    "charlm-lookahead-memory": "failed",  # a fresh process per call remembers only the row it is given
    "charlm-lookahead-memory-file": "failed",  # ...and cannot write a file to remember more
    "charlm-scorer-frame-walk": "ok",  # no targets in any frame of the model process: the honest score
    "charlm-lingering-daemon": "ok",  # killed before scoring starts: the honest score
}
FAKE_VALUES = (1.05, 1.07)  # what the fd scan and the daemon print


@pytest.mark.slow
def test_code_in_the_scoring_process_and_processes_left_by_training_never_move_the_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_charlm_data()
    static_checks_off(monkeypatch)
    rows = {row.case: row for row in run(by_name(list(IN_SCORER)), tmp_path, slots=2)}
    assert {name: row.status for name, row in rows.items()} == IN_SCORER, rows
    assert "cross_entropy" in (rows["charlm-scorer-self-restoring-patch"].reason or "")
    assert "not causal" in (rows["charlm-lookahead-memory-file"].reason or "")
    for name in ("charlm-scorer-frame-walk", "charlm-lingering-daemon"):
        row = rows[name]
        assert row.clean_ok and row.metric is not None and row.metric not in FAKE_VALUES, row
        assert row.metric > 2.0, row  # the honest loss of a few seconds of training, not a nudged one


@pytest.mark.slow
def test_validation_windows_snooped_from_the_scorers_memory_are_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_charlm_data()
    static_checks_off(monkeypatch)
    cases = by_name(["charlm-snoop-validation-windows"])
    assert_caught(run(cases, tmp_path, slots=1), cases)


@pytest.mark.slow
def test_a_made_up_value_given_to_grpos_metric_helper_is_caught(tmp_path: Path) -> None:
    needs_env_data("grpo")
    cases = by_name(["grpo-fake-metric"])
    assert_caught(run(cases, tmp_path, slots=1), cases)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("IDEALAB_REDTEAM_FULL") != "1", reason="the whole corpus: IDEALAB_REDTEAM_FULL=1")
@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_whole_corpus_of_an_environment(env: str, tmp_path: Path) -> None:
    needs_env_data("shakespeare" if env == "charlm" else env)
    cases = [c for c in HACKS + LEGIT if c.env == env]
    assert_caught(run(cases, tmp_path, slots=2), cases)
