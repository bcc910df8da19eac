"""Jobs start while the rest of their epoch is still being implemented (no barrier of blocking applies)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

QUAD = Path(__file__).parent / "envs" / "quad"


def test_the_first_job_starts_before_the_last_idea_of_the_epoch_is_applied(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    # one baseline run, so a slot is free for the epoch's first jobs (repeats would take both slots first)
    done = subprocess.run(
        [sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--epochs", "1", "--ideas-per-epoch", "24",
         "--slots", "2", "--workdir", str(workdir), "--quiet", "--baseline-runs", "1", "--confirm-top", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(workdir / "idealab.db") as conn:
        (first_start,) = conn.execute(
            "SELECT min(j.started_at) FROM jobs j JOIN ideas i ON i.id = j.idea_id WHERE i.epoch = 0"
        ).fetchone()
        (last_applied,) = conn.execute(
            "SELECT max(c.created_at) FROM code_changes c JOIN ideas i ON i.id = c.idea_id WHERE i.epoch = 0"
        ).fetchone()
        (applied,) = conn.execute("SELECT count(*) FROM code_changes WHERE outcome = 'applied'").fetchone()
    assert applied == 24
    assert first_start < last_applied  # both recorded by the orchestrator as they happened
