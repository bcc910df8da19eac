"""A real single-node Slurm cluster for the tests, from the shared `slurm-single-node.sh` (next to the repo).

The script installs Debian's slurm-wlm and munge if they are missing and starts munged, slurmctld and
slurmd on loopback (as root), with 2 fake GPUs as GRES. `slurm_cluster()` starts it unless one is up already,
and stops only what it started. It skips the test with the reason where no cluster can be had, unless
IDEALAB_REQUIRE_CLUSTERS=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SCRIPT = Path("shared") / "tools" / "slurm-single-node.sh"
REPO = Path(__file__).resolve().parents[1]
REQUIRE_VAR = "IDEALAB_REQUIRE_CLUSTERS"


def find_script() -> Path | None:
    """The script in `shared/tools` beside the repository (or beside a directory above it: a worktree)."""
    for parent in REPO.parents:
        if (parent / SCRIPT).is_file():
            return parent / SCRIPT
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"a Slurm cluster is required here ({REQUIRE_VAR}=1) but {reason}")
    pytest.skip(reason)


def _slurm_conf(script: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip().removeprefix("export SLURM_CONF=")


def _cluster_answers(env: dict[str, str]) -> bool:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mixed", "allocated"))


@contextmanager
def slurm_cluster() -> Iterator[dict[str, str]]:
    """The environment (SLURM_CONF set) in which sbatch, squeue and scancel reach the cluster."""
    script = find_script()
    if script is None:
        _unavailable(f"no {SCRIPT} beside the repository: no Slurm cluster to test against")
    assert script is not None
    if os.geteuid() != 0:
        _unavailable("starting a Slurm cluster needs root (the script runs the daemons as root)")
    env = {**os.environ, "SLURM_CI_ACCOUNTING": "0"}  # squeue and scontrol suffice; no MariaDB to start
    env["SLURM_CONF"] = _slurm_conf(script, env)
    if _cluster_answers(env):
        yield env  # up already (someone else's): used, never stopped here
        return
    done = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        _unavailable(f"the Slurm cluster did not start: {done.stderr.strip()[-1500:]}")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script), "stop"], capture_output=True, env=env, timeout=120, check=False)
