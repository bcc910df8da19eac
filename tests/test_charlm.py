"""The built-in charlm environment: its manifest, its knobs, its evaluation and a real smoke run."""

from __future__ import annotations

import ast
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from idealab.data import DataError, shakespeare_path
from idealab.executor.sandbox import job_environment
from idealab.manifest import Goal, Manifest, load_manifest, resolve_env
from idealab.metrics import extract_values, judge
from idealab.paths import DATA_DIR_VAR, data_dir

ENV_DIR = resolve_env("charlm")
UNIFORM_LOSS = math.log(84)  # the text has 84 distinct characters


def needs_data() -> None:
    try:
        shakespeare_path()
    except DataError as exc:
        pytest.skip(f"Shakespeare data absent ({exc}); `make data` fetches it")


def workspace(tmp_path: Path) -> Path:
    """A job's own copy of the environment, as the executor makes one."""
    dest = tmp_path / "charlm"
    shutil.copytree(ENV_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run_env(manifest: Manifest, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    # the environment a job gets from the executor (scrubbed, this interpreter first on PATH, data dir)
    env = job_environment({**manifest.run.env, **extra_env}, (), "charlm-test")
    return subprocess.run(
        ["/bin/sh", "-c", manifest.run.command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=manifest.run.timeout_s,
        check=False,
    )


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
    assert m.run.env["CHARLM_THREADS"] == "1" and float(m.run.env["CHARLM_TIME_BUDGET_S"]) > 0
    assert set(m.presets) == {"cpu-smoke", "demo"}


def test_presets_shorten_the_budget() -> None:
    default, smoke = (load_manifest(ENV_DIR, p).run.env["CHARLM_TIME_BUDGET_S"] for p in (None, "cpu-smoke"))
    assert float(smoke) < float(default)


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


EVAL_SCRIPT = """
import sys, torch
sys.path.insert(0, {env!r})
import prepare
from evaluate import evaluate

class Uniform(torch.nn.Module):
    def forward(self, idx):
        return torch.zeros(*idx.shape, {vocab})

class PeekAhead(torch.nn.Module):  # position t sees the mean of the whole window
    def forward(self, idx):
        future = idx.float().mean(dim=1, keepdim=True).expand(idx.shape)
        return future.unsqueeze(-1).repeat(1, 1, {vocab})  * torch.arange({vocab}).float()

evaluate({model}(), step=7)
"""


def run_eval(tmp_path: Path, model: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "eval_check.py"
    source = EVAL_SCRIPT.format(env=str(workspace(tmp_path)), vocab=84, model=model)
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, DATA_DIR_VAR: str(data_dir()), "CHARLM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=False)


def test_evaluation_scores_a_uniform_model_at_log_vocab(tmp_path: Path) -> None:
    needs_data()
    proc = run_eval(tmp_path, "Uniform")
    assert proc.returncode == 0, proc.stderr
    values = extract_values(proc.stdout, load_manifest(ENV_DIR).metric)
    assert len(values) == 1 and values[0].step == 7
    assert values[0].value == pytest.approx(UNIFORM_LOSS, abs=1e-5)


def test_evaluation_rejects_a_model_that_sees_later_characters(tmp_path: Path) -> None:
    needs_data()
    proc = run_eval(tmp_path, "PeekAhead")
    assert proc.returncode != 0
    assert "not causal" in proc.stderr and "@metric" not in proc.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, str]:
    needs_data()
    manifest = load_manifest(ENV_DIR, "cpu-smoke")
    proc = run_env(manifest, workspace(tmp_path_factory.mktemp("smoke")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return manifest, proc.stdout


@pytest.mark.slow
def test_smoke_run_reports_a_finite_val_loss(smoke_run: tuple[Manifest, str]) -> None:
    manifest, stdout = smoke_run
    verdict = judge(extract_values(stdout, manifest.metric), manifest.metric)
    assert verdict.ok, verdict.reason
    assert verdict.metric is not None and verdict.metric < UNIFORM_LOSS - 0.3  # it learned something


@pytest.mark.slow
def test_a_sane_learning_rate_beats_a_terrible_one(smoke_run: tuple[Manifest, str], tmp_path: Path) -> None:
    manifest, stdout = smoke_run
    good = judge(extract_values(stdout, manifest.metric), manifest.metric).metric
    ws = workspace(tmp_path)
    train = ws / "train.py"
    source = train.read_text()
    assert "\nLEARNING_RATE = 3e-3" in source
    train.write_text(source.replace("\nLEARNING_RATE = 3e-3", "\nLEARNING_RATE = 1e-5", 1))
    proc = run_env(manifest, ws)
    bad = judge(extract_values(proc.stdout, manifest.metric), manifest.metric).metric
    assert good is not None and bad is not None and good < bad - 0.5
