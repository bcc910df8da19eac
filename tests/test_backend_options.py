"""`idealab run --backend ...`: options that do not fit the backend are refused before anything starts; the
backend and its options are stored with the run, and a resume keeps them (docs/clusters.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from idealab.executor.backends import BACKEND_KEY, BackendChoice, BackendRequest, resolve_backend
from idealab.executor.slurm import SlurmOptions
from idealab.store import Store

QUAD = Path(__file__).parent / "envs" / "quad"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slurm-partition", "gpu"], "the --slurm-* options are for --backend slurm"),
        (["--slurm-option=--exclusive"], "the --slurm-* options are for --backend slurm"),
        (["--backend", "slurm", "--gpus", "0"], "--gpus picks GPUs of this machine"),
        (["--backend", "slurm", "--slurm-poll-s", "0"], "--slurm-poll-s must be positive"),
        (["--backend", "slurm", "--slots", "2"], "--backend slurm: sbatch, squeue, scontrol, scancel not found here"),
        (["--backend", "kubernetes"], "--backend: expected one of local, slurm"),
    ],
)
def test_a_misfit_backend_option_is_refused(tmp_path: Path, args: list[str], message: str) -> None:
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--workdir", str(workdir), *args]
    no_slurm = {**os.environ, "PATH": str(tmp_path)}  # no Slurm commands on it (python is called by its path)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=no_slurm)
    assert done.returncode != 0 and message in " ".join((done.stdout + done.stderr).split())
    assert not workdir.exists()  # nothing created


# --- the backend is stored with the run and honoured on resume -------------------------------------------

NOISY = Path(__file__).parent / "envs" / "noisy"
SLURM_GPU = {"name": "slurm", "options": BackendChoice("slurm", SlurmOptions(partition="gpu")).options()}


def idealab(workdir: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`idealab run` of one idea on the noisy environment; `path`: the PATH the command sees."""
    command = [
        sys.executable, "-m", "idealab", "run", "--workdir", str(workdir), "--ideator", "mutate", "--epochs", "1",
        "--ideas-per-epoch", "1", "--baseline-runs", "1", "--confirm-top", "0", "--quiet", *args,
    ]  # fmt: skip
    env = os.environ if path is None else {**os.environ, "PATH": path}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def stored_config(workdir: Path) -> dict:
    with Store.open_readonly(workdir) as store:
        run = store.get_run()
        assert run is not None
        return dict(run.config)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("backend") / "run"
    done = idealab(workdir, "--env", str(NOISY))
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir


def test_a_new_run_stores_its_backend(local_run: Path) -> None:
    assert stored_config(local_run)[BACKEND_KEY] == {"name": "local", "options": {}}


def test_a_resume_without_backend_keeps_the_stored_one_and_another_is_refused(local_run: Path) -> None:
    again = idealab(local_run)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "backend local, as stored with the run" in again.stdout + again.stderr  # (the console's stream)
    refused = idealab(local_run, "--backend", "slurm", "--slurm-partition", "gpu")
    assert refused.returncode != 0
    assert "started with --backend local; it cannot continue with --backend slurm" in " ".join(refused.stderr.split())


def test_a_stored_slurm_backend_is_used_by_a_resume_without_backend(local_run: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(local_run, workdir)
    with Store.open(workdir) as store:  # as if it had been started with --backend slurm --slurm-partition gpu
        run = store.get_run()
        assert run is not None
        store.set_run_config(run.id, {**run.config, BACKEND_KEY: SLURM_GPU})
    no_slurm = str(tmp_path)  # no Slurm commands on it: the stored choice is checked, never replaced by local
    words = " ".join(idealab(workdir, path=no_slurm).stderr.split())
    assert "--backend slurm: sbatch, squeue, scontrol, scancel not found here" in words
    words = " ".join(idealab(workdir, "--backend", "local", path=no_slurm).stderr.split())
    assert "started with --backend slurm; it cannot continue with --backend local" in words
    words = " ".join(idealab(workdir, "--slurm-partition", "cpu", path=no_slurm).stderr.split())
    assert "--slurm-partition: 'gpu' when the run started, 'cpu' now" in words
    assert stored_config(workdir)[BACKEND_KEY] == SLURM_GPU  # nothing of it changed


def test_resolve_a_new_runs_backend() -> None:
    choice, from_store = resolve_backend(BackendRequest(), None)
    assert choice == BackendChoice() and not from_store
    request = BackendRequest("slurm", {"slurm.partition": "gpu", "slurm.extra": ["--exclusive"], "slurm.poll_s": 2.0})
    choice, _ = resolve_backend(request, None)
    assert choice.slurm == SlurmOptions(partition="gpu", extra=("--exclusive",), poll_s=2.0)
    assert choice.record()["options"]["slurm.extra"] == ["--exclusive"]


def test_resume_keeps_stored_options_and_allows_only_the_changeable_ones() -> None:
    stored = BackendChoice("slurm", SlurmOptions(partition="gpu", cpus_per_job=8, extra=("--exclusive",))).record()
    choice, from_store = resolve_backend(BackendRequest(), stored)
    assert from_store and choice.slurm == SlurmOptions(partition="gpu", cpus_per_job=8, extra=("--exclusive",))
    changed = {"slurm.poll_s": 30.0, "slurm.account": "other", "slurm.qos": "low", "slurm.partition": "gpu"}
    choice, from_store = resolve_backend(BackendRequest("slurm", changed), stored)
    assert not from_store and (choice.slurm.poll_s, choice.slurm.account, choice.slurm.qos) == (30.0, "other", "low")
    with pytest.raises(ValueError) as refused:
        resolve_backend(BackendRequest(None, {"slurm.cpus_per_job": 4, "slurm.extra": ["--exclusive"]}), stored)
    assert "--slurm-cpus-per-job: 8 when the run started, 4 now" in str(refused.value)
    assert "--slurm-extra" not in str(refused.value)  # the same sbatch options: no difference
    with pytest.raises(ValueError, match="with --backend slurm the cluster assigns them"):
        resolve_backend(BackendRequest(gpus="0"), stored)
    with pytest.raises(ValueError, match="the --ray-\\* options are for --backend ray"):
        resolve_backend(BackendRequest(None, {"ray.address": "http://head:8265"}), stored)


def test_a_ray_address_is_stored_without_credentials() -> None:
    choice, _ = resolve_backend(BackendRequest("ray", {"ray.address": "http://me:secret@head:8265"}), None)
    stored = choice.record()
    assert "secret" not in str(stored) and stored["options"]["ray.address"] == "http://head:8265"
    with pytest.raises(ValueError, match="give --ray-address again"):
        resolve_backend(BackendRequest(), stored)
    choice, _ = resolve_backend(BackendRequest(None, {"ray.address": "http://me:secret@head:8265"}), stored)
    assert choice.ray.address == "http://me:secret@head:8265"  # used, never stored
    with pytest.raises(ValueError, match="--ray-address: 'http://head:8265' when the run started, 'http://b:8265'"):
        resolve_backend(BackendRequest("ray", {"ray.address": "http://b:8265"}), stored)
