"""`idealab run --backend ...`: options that do not fit the backend are refused before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
