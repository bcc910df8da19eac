"""The built-in charlm environment: its manifest, its knobs, its evaluation and a real smoke run."""

from __future__ import annotations

import ast
import asyncio
import math
import textwrap
from pathlib import Path

import pytest

from idealab.data import DataError, shakespeare_path
from idealab.executor.bwrap import bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.runner import Outcome, copy_omits, preflight_manifest, run_job
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.manifest import Clock, Goal, load_manifest, resolve_env
from idealab.status import Status

ENV_DIR = resolve_env("charlm")
UNIFORM_LOSS = math.log(84)  # the text has 84 distinct characters


def needs_data() -> None:
    try:
        shakespeare_path()
    except DataError as exc:
        pytest.skip(f"Shakespeare data absent ({exc}); `make data` fetches it")


def module_assignments(path: Path) -> dict[str, list[object]]:
    """{name: [values]} of module-level `NAME = <number>` assignments."""
    found: dict[str, list[object]] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            found.setdefault(node.targets[0].id, []).append(value)
    return found


@pytest.mark.parametrize("preset", [None, "cpu-smoke", "demo"])
def test_manifest_loads_with_each_preset(preset: str | None) -> None:
    m = load_manifest(ENV_DIR, preset)
    assert m.metric.name == "val_loss" and m.metric.goal is Goal.MINIMIZE
    assert m.files.editable == ("train.py",) and "evaluate.py" in m.files.hidden
    assert m.run.env["CHARLM_THREADS"] == "1"
    assert m.budget is not None and m.budget.clock is Clock.CPU and m.budget.seconds > 0
    assert m.score is not None and "shakespeare/val.txt" in m.score.private_data
    assert set(m.presets) == {"cpu-smoke", "demo"}


def test_presets_shorten_the_budget() -> None:
    default, smoke = (load_manifest(ENV_DIR, p).budget for p in (None, "cpu-smoke"))
    assert default is not None and smoke is not None and smoke.seconds < default.seconds


def test_each_knob_is_one_module_level_number_in_range() -> None:
    m = load_manifest(ENV_DIR)
    assert m.knobs
    for knob in m.knobs.values():
        values = module_assignments(m.root / knob.file).get(knob.name, [])
        assert len(values) == 1, f"{knob.name}: expected one module-level assignment, found {values}"
        value = values[0]
        assert isinstance(value, int | float) and not isinstance(value, bool), knob.name
        assert knob.low <= value <= knob.high, f"{knob.name}={value} outside [{knob.low}, {knob.high}]"
        if knob.integer:
            assert isinstance(value, int), knob.name


def run_scored(tmp_path: Path, train: str | None = None, preset: str = "cpu-smoke", preflight: bool = False) -> Outcome:
    """One job of charlm through the executor (training, then the separate scoring), its train.py
    replaced by `train` where given; with `preflight`, the job an implementer's preflight check runs."""
    needs_data()
    manifest = load_manifest(ENV_DIR, preset)
    if preflight:
        manifest = preflight_manifest(manifest)
    code = copy_environment(ENV_DIR, tmp_path / "code", omit=copy_omits(manifest))
    if train is not None:
        (code / "train.py").write_text(textwrap.dedent(train))

    async def go() -> Outcome:
        backend = LocalBackend(SlotPool.cpu_only(1))
        try:
            return await run_job(backend, manifest, code, "charlm-test", tmp_path / "logs")
        finally:
            await backend.close()

    return asyncio.run(go())


# build_model() of stand-in models, trained for nothing; each needs a parameter to have a state dict
STAND_IN = """
import torch
from prepare import load_vocab, save_artefact

class Uniform(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(len(load_vocab())))

    def forward(self, idx):
        return self.bias.expand(*idx.shape, -1)

class PeekAhead(Uniform):  # position t sees the mean of the whole window
    def forward(self, idx):
        future = idx.float().mean(dim=1, keepdim=True).expand(idx.shape)
        return future.unsqueeze(-1) * torch.arange(self.bias.shape[0]).float() + self.bias

class PeekAtEvalBatch(Uniform):  # looks ahead only at the evaluation's batch size
    def forward(self, idx):
        if idx.shape[0] == 64:
            return PeekAhead.forward(self, idx)
        return Uniform.forward(self, idx)

class Remembering(Uniform):  # what followed the same prefix in the first row it was given, itself included
    seen = {{}}

    def forward(self, idx):
        out = Uniform.forward(self, idx).clone()
        for b, row in enumerate(idx.tolist()):
            for t in range(len(row) - 1):
                Remembering.seen.setdefault(tuple(row[: t + 1]), row[t + 1])
            for t in range(len(row)):
                if tuple(row[: t + 1]) in Remembering.seen:
                    out[b, t, Remembering.seen[tuple(row[: t + 1])]] += 5.0
        return out

def build_model():
    return {model}()

if __name__ == "__main__":
    save_artefact(build_model())
"""


def test_scoring_scores_a_uniform_model_at_log_vocab(tmp_path: Path) -> None:
    outcome = run_scored(tmp_path, STAND_IN.format(model="Uniform"))
    assert outcome.status is Status.OK, outcome.reason
    assert outcome.metric == pytest.approx(UNIFORM_LOSS, abs=1e-5)


@pytest.mark.parametrize("model", ["PeekAhead", "PeekAtEvalBatch", "Remembering"])
def test_scoring_rejects_a_model_that_sees_later_characters(tmp_path: Path, model: str) -> None:
    outcome = run_scored(tmp_path, STAND_IN.format(model=model))
    assert outcome.status is Status.FAILED
    assert outcome.reason is not None and "not causal" in outcome.reason
    assert outcome.metric is None


@pytest.mark.parametrize("model", ["PeekAhead", "PeekAtEvalBatch"])
def test_the_preflights_quick_scoring_rejects_a_model_that_sees_later_characters(tmp_path: Path, model: str) -> None:
    outcome = run_scored(tmp_path, STAND_IN.format(model=model), preflight=True)
    assert outcome.status is Status.FAILED
    assert outcome.reason is not None and "not causal" in outcome.reason


@pytest.mark.slow
def test_the_preflight_of_the_baseline_trains_briefly_and_passes_the_quick_scoring(tmp_path: Path) -> None:
    outcome = run_scored(tmp_path, preflight=True)
    assert outcome.status is Status.OK, outcome.reason
    assert "CHARLM_TIME_BUDGET_S=4" in load_manifest(ENV_DIR).run.preflight  # type: ignore[operator]
    assert outcome.result.training_s is None  # no [budget] in a preflight: its command sets its length
    assert outcome.metric is not None and outcome.metric < UNIFORM_LOSS


def test_a_train_py_that_replaces_what_scoring_uses_is_tampered(tmp_path: Path) -> None:
    stand_in = STAND_IN.format(model="Uniform")
    outcome = run_scored(tmp_path, "import torch.nn.functional as F\nF.cross_entropy = lambda *a, **k: 0\n" + stand_in)
    assert outcome.status is Status.TAMPERED
    assert outcome.reason is not None and "cross_entropy" in outcome.reason


@pytest.mark.skipif(bwrap_problem() is not None, reason="private data is hidden by the sandbox")
def test_training_cannot_read_the_validation_text(tmp_path: Path) -> None:
    outcome = run_scored(
        tmp_path,
        STAND_IN.format(model="Uniform")
        + textwrap.dedent("""
        import prepare
        try:
            prepare.data_file("val.txt").read_text()
            print("val.txt: read")
        except (OSError, SystemExit):
            print("val.txt: out of reach")
    """),
    )
    assert outcome.status is Status.OK, outcome.reason
    assert "val.txt: out of reach" in outcome.result.stdout_path.read_text()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = run_scored(tmp_path_factory.mktemp("smoke"))
    assert outcome.status is Status.OK, outcome.reason
    return outcome


@pytest.mark.slow
def test_smoke_run_reports_a_finite_val_loss(smoke_run: Outcome) -> None:
    assert smoke_run.metric is not None and smoke_run.metric < UNIFORM_LOSS - 0.3  # it learned something
    assert smoke_run.result.training_s is not None and smoke_run.result.training_s >= 8.0  # the whole budget


@pytest.mark.slow
def test_a_sane_learning_rate_beats_a_terrible_one(smoke_run: Outcome, tmp_path: Path) -> None:
    source = (ENV_DIR / "train.py").read_text()
    assert "\nLEARNING_RATE = 3e-3" in source
    bad = run_scored(tmp_path, source.replace("\nLEARNING_RATE = 3e-3", "\nLEARNING_RATE = 1e-5", 1))
    assert smoke_run.metric is not None and bad.metric is not None and smoke_run.metric < bad.metric - 0.5
