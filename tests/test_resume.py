"""Kill the orchestrator mid-run (SIGKILL or Ctrl-C), run the same command again: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

QUAD = Path(__file__).parent / "envs" / "quad"
EPOCHS, IDEAS = 2, 4


def command(workdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--preset", "slow",
        "--epochs", str(EPOCHS), "--ideas-per-epoch", str(IDEAS), "--slots", "2", "--seed", "3",
        "--workdir", str(workdir), "--quiet",
    ]


def terminal_rows(db: Path) -> dict[int, tuple[str, float | None]]:
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute(
                "SELECT id, status, metric FROM ideas WHERE status IN ('ok','failed','timeout','invalid',"
                "'tampered','unimplementable','cancelled')"
            ).fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            return {}
    return {r[0]: (r[1], r[2]) for r in rows}


def job_processes(workdir: Path) -> list[int]:
    """Live processes that belong to jobs of this run (found by the IDEALAB_JOB_ID in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"IDEALAB_JOB_ID=" in environ and cwd.startswith(str(workdir)):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_after_results", "sig"),
    [
        pytest.param(0, signal.SIGKILL, id="sigkill-first-jobs"),
        pytest.param(3, signal.SIGKILL, id="sigkill-after-3-results"),
        pytest.param(2, signal.SIGINT, id="ctrl-c-after-2-results"),
    ],
)
def test_killed_then_resumed(tmp_path, kill_after_results, sig):
    workdir = tmp_path / "run"
    db = workdir / "idealab.db"
    proc = subprocess.Popen(command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        rows = terminal_rows(db)
        if len(rows) >= kill_after_results and job_processes(workdir):  # jobs are running right now
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run never reached the kill point: " + proc.stderr.read().decode()[-2000:])
    proc.send_signal(sig)  # SIGKILL: nothing runs after it; SIGINT: Ctrl-C, the jobs are stopped cleanly
    proc.wait(timeout=60)
    before = terminal_rows(db)
    with sqlite3.connect(db) as conn:
        in_flight = conn.execute("SELECT count(*) FROM jobs WHERE finished_at IS NULL").fetchone()[0]

    done = subprocess.run(command(workdir), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    after = terminal_rows(db)
    for idea_id, row in before.items():  # no finished result lost or changed
        assert after[idea_id] == row
    with sqlite3.connect(db) as conn:
        ideas = conn.execute("SELECT epoch, idx, status FROM ideas").fetchall()
        abandoned = conn.execute("SELECT count(*) FROM jobs WHERE status = 'abandoned'").fetchone()[0]
    assert len(ideas) == EPOCHS * IDEAS + 1  # + the baseline
    assert len({(e, i) for e, i, _ in ideas}) == len(ideas)
    assert all(s == "ok" for _, _, s in ideas), ideas
    assert abandoned >= in_flight  # the killed run's in-flight jobs were cleaned up and re-queued
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and abandoned >= 1
    assert job_processes(workdir) == []
