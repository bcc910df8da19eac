"""A real small run shared by the report, export, serve and browser tests, and a dashboard server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runhelpers import EPOCHS, IDEAS, idealab, mixed_env


@pytest.fixture(scope="session")
def quad_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `idealab run` (mutate ideator) of the mixed quad environment."""
    root = tmp_path_factory.mktemp("views")
    workdir = root / "run"
    done = idealab(
        "run", "--env", str(mixed_env(root)), "--epochs", str(EPOCHS), "--ideas-per-epoch", str(IDEAS),
        "--slots", "2", "--seed", "3", "--workdir", str(workdir), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return workdir


@pytest.fixture
def run_copy(quad_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared run that a test may add experiments to."""
    copy = tmp_path / "run"
    shutil.copytree(quad_run, copy)
    return copy


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start `idealab serve` on a free loopback port for the given run directories; yields its base URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(*workdirs: Path, extra: tuple[str, ...] = ()) -> str:
        args = [a for w in workdirs for a in ("--workdir", str(w))]
        proc = subprocess.Popen(
            [sys.executable, "-m", "idealab", "serve", *args, "--port", "0", "--interval", "0.3", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed once the socket listens
        assert url.startswith("http://"), proc.stderr.read() if proc.stderr else url
        return url

    yield start
    for proc in procs:
        proc.terminate()
        proc.communicate(timeout=30)
