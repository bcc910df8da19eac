"""`idealab run --track`: refused early when unusable; with the tracker installed, every finished experiment
is logged offline (the tracker tests are skipped where wandb or trackio is not installed)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from idealab.store import Store

QUAD = Path(__file__).parent / "envs" / "quad"
EPOCHS, IDEAS = 2, 3


def run(workdir: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--epochs", str(EPOCHS), "--ideas-per-epoch",
         str(IDEAS), "--slots", "2", "--workdir", str(workdir), "--quiet", *extra],
        capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_unknown_tracker_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    done = run(tmp_path / "w", "--track", "tensorboard")
    assert done.returncode == 2 and "wandb, trackio" in done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_that_is_not_installed_is_named(tmp_path: Path) -> None:
    done = run(tmp_path / "w", "--track", "wandb")
    assert done.returncode == 2 and "pip install wandb" in done.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trackio") is None, reason="trackio is not installed")
def test_trackio_logs_every_finished_experiment(tmp_path: Path) -> None:
    env = {"TRACKIO_DIR": str(tmp_path / "trackio"), "TRACKIO_PROJECT": "idealab-test"}
    done = run(tmp_path / "w", "--track", "trackio", env=env)
    assert done.returncode == 0, done.stderr
    read = (
        "import json, trackio.sqlite_storage as s; "
        "run = s.SQLiteStorage.get_runs('idealab-test')[0]; "
        "print(json.dumps(s.SQLiteStorage.get_logs('idealab-test', run), default=str))"
    )
    out = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    logs = json.loads(out.stdout)
    assert [row["step"] for row in logs] == list(range(1, EPOCHS * IDEAS + 1))
    assert all(row["status"] == "ok" and "loss" in row and "best_loss" in row and row["idea"] for row in logs)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_logs_offline_by_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--epochs", str(EPOCHS), "--ideas-per-epoch",
         str(IDEAS), "--slots", "2", "--workdir", str(tmp_path / "w"), "--quiet", "--track", "wandb"],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    logs = list((tmp_path / "w" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1  # offline: nothing was sent, the run waits for `wandb sync`
    # wandb's log is framed protobuf; each logged row carries its idea text as a JSON string value.
    data = logs[0].read_bytes()
    with Store.open(tmp_path / "w") as store:
        ideas = [i for i in store.ideas(1) if i.epoch >= 0]
    assert len(ideas) == EPOCHS * IDEAS
    assert all(json.dumps(i.text).encode() in data for i in ideas)
