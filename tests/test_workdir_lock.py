"""One orchestrator per workdir (a flock held for the process's life) and read-only `status`."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idealab.status import Status
from idealab.store import DB_NAME, Store, StoreError
from idealab.workdir_lock import LOCK_NAME, WorkdirBusy, WorkdirLock
from jobprocs import job_processes
from mounts import readonly_copy

QUAD = Path(__file__).parent / "envs" / "quad"
SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def idealab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idealab", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )



def job_leaders(workdir: Path) -> list[int]:
    return job_processes(workdir, leaders_only=True)


# A process that takes the lock, says so, optionally starts a long-lived child, then waits to be killed.
_HOLD = """
import subprocess, sys, time
from pathlib import Path
from idealab.workdir_lock import WorkdirLock
lock = WorkdirLock.acquire(Path(sys.argv[1]))
if sys.argv[2] == "child":
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    print(child.pid, flush=True)
print("locked", flush=True)
sys.stdin.read()
"""


def hold(workdir: Path, mode: str = "") -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(workdir), mode or "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline()) not in ("locked\n", ""):
        lines.append(line.strip())
    assert line == "locked\n"
    return proc, lines


def test_a_held_lock_is_refused_naming_pid_and_host(tmp_path: Path) -> None:
    proc, _ = hold(tmp_path)
    try:
        with pytest.raises(WorkdirBusy) as refused:
            WorkdirLock.acquire(tmp_path)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in str(refused.value)
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_dies_with_its_holder_even_when_a_child_lives_on(tmp_path: Path) -> None:
    proc, lines = hold(tmp_path, "child")
    child = int(lines[0])
    try:
        proc.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel releases the flock
        proc.wait()
        os.kill(child, 0)  # the child is still alive, and it did not inherit the lock
        with WorkdirLock.acquire(tmp_path) as lock:
            assert lock.held and (tmp_path / LOCK_NAME).read_text().startswith('{"pid": ' + str(os.getpid()))
    finally:
        os.kill(child, signal.SIGKILL)


def gated_env(tmp_path: Path) -> Path:
    """quad whose jobs wait until the file named by $QUAD_GATE exists: they run as long as the test needs."""
    env = tmp_path / "gated"
    shutil.copytree(QUAD, env)
    manifest = env / "idealab.toml"
    command = """while [ ! -e "$QUAD_GATE" ]; do sleep 0.05; done; python train.py"""
    text = manifest.read_text().replace('command = "python train.py"', f"command = '{command}'")
    text = text.replace("timeout_s = 30", "timeout_s = 300")  # held jobs wait for the test, however slow it is
    manifest.write_text(text.replace("[run]\n", '[run]\nallow_env = ["QUAD_GATE"]\n', 1))  # jobs see listed names only
    return env


def run_command(env: Path, workdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "idealab", "run", "--env", str(env), "--epochs", "1", "--ideas-per-epoch", "2",
        "--slots", "2", "--workdir", str(workdir), "--quiet", "--baseline-runs", "1", "--confirm-top", "0",
        "--sandbox", "off",  # the jobs watch a gate file in the test's /tmp, and the test reads their host pids
    ]  # fmt: skip


@pytest.mark.slow
def test_a_second_run_is_refused_and_leaves_the_first_runs_jobs_alone(tmp_path: Path) -> None:
    env, workdir, gate = gated_env(tmp_path), tmp_path / "run", tmp_path / "gate"
    first_env = {**ENV, "QUAD_GATE": str(gate)}
    first = subprocess.Popen(
        run_command(env, workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=first_env
    )
    try:
        deadline = time.monotonic() + 60
        while not (jobs := job_leaders(workdir)):  # the first run's jobs are running (held by the gate)
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started a job"
            time.sleep(0.05)
        second = subprocess.run(run_command(env, workdir), capture_output=True, text=True, timeout=60, env=ENV)
        for pid in jobs:
            os.kill(pid, 0)  # still alive: the second run did not reap them
        gate.touch()
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert second.returncode == 1 and "Traceback" not in second.stderr
    message = " ".join(second.stderr.split())
    assert "in use by another idealab run" in message
    assert f"pid {first.pid} on host {socket.gethostname()}" in message
    assert first.returncode == 0, err[-2000:]
    with sqlite3.connect(workdir / DB_NAME) as db:
        assert db.execute("SELECT DISTINCT status FROM ideas").fetchall() == [("ok",)]  # every run finished ok
        assert db.execute("SELECT count(*) FROM ideas WHERE epoch >= 0").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM jobs WHERE status != 'ok'").fetchone() == (0,)


# ------------------------------------------------------------------------------------------- status


def make_run(workdir: Path) -> None:
    with Store.open(workdir) as store:
        run = store.create_run("quad", str(QUAD), None, {"seed": 0}, {"metric": {"name": "loss", "goal": "minimize"}})
        store.add_idea(run.id, -1, 0, "baseline", "Baseline", "baseline", {})
        idea = store.add_idea(run.id, 0, 0, "initial", "smaller X", "mutate", {})
        store.finish_idea(idea.id, Status.OK, 1.5, None, time.time())


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_status_does_not_change_the_database(tmp_path: Path) -> None:
    make_run(tmp_path)
    before = fingerprint(tmp_path / DB_NAME)
    done = idealab("status", "--workdir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    assert '"smaller X"' in done.stdout
    assert fingerprint(tmp_path / DB_NAME) == before


def test_status_beside_a_live_writer_sees_its_commits_and_writes_nothing(tmp_path: Path) -> None:
    make_run(tmp_path)
    with Store.open(tmp_path) as live:  # the orchestrator: its commits sit in the WAL, not yet in the file
        run = live.get_run()
        assert run is not None
        live.add_idea(run.id, 0, 1, "initial", "larger Y", "mutate", {})
        before = fingerprint(tmp_path / DB_NAME)
        done = idealab("status", "--workdir", str(tmp_path), "--json")
        assert done.returncode == 0, done.stderr
        assert '"larger Y"' in done.stdout
        assert fingerprint(tmp_path / DB_NAME) == before


@pytest.mark.parametrize("wal", [False, True], ids=["checkpointed", "wal-left-by-a-killed-writer"])
def test_status_reads_a_read_only_workdir(tmp_path: Path, wal: bool) -> None:
    workdir = tmp_path / "w"
    make_run(workdir)
    if wal:  # a writer SIGKILLed after a commit leaves -wal and -shm with that commit only in the WAL
        code = (
            "import os, signal, sys; from pathlib import Path; from idealab.store import Store\n"
            "s = Store.open(Path(sys.argv[1])); s.add_idea(1, 0, 1, 'initial', 'larger Y', 'mutate', {})\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        subprocess.run([sys.executable, "-c", code, str(workdir)], env=ENV, check=False)
        assert (workdir / f"{DB_NAME}-wal").stat().st_size > 0
    with readonly_copy(workdir, tmp_path / "ro") as readonly:
        before = fingerprint(readonly / DB_NAME)
        done = idealab("status", "--workdir", str(readonly), "--json")
        assert done.returncode == 0, done.stderr
        assert '"smaller X"' in done.stdout and ('"larger Y"' in done.stdout) == wal
        assert fingerprint(readonly / DB_NAME) == before


def test_run_on_a_read_only_workdir_is_one_clear_line(tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    make_run(workdir)
    with readonly_copy(workdir, tmp_path / "ro") as readonly:
        done = idealab("run", "--workdir", str(readonly), "--quiet")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2, done.stderr
    message = " ".join(done.stderr.split())
    assert f"cannot write in {readonly}" in message and "writable workdir" in message


def test_status_refuses_a_database_from_a_newer_idealab(tmp_path: Path) -> None:
    make_run(tmp_path)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_future'")
    before = fingerprint(tmp_path / DB_NAME)
    done = idealab("status", "--workdir", str(tmp_path))
    assert done.returncode == 1 and "newer idealab" in " ".join(done.stderr.split())
    assert fingerprint(tmp_path / DB_NAME) == before


def test_status_refuses_an_older_schema_and_says_to_resume(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from idealab.store.schema import MIGRATIONS_DIR, READABLE_OLDER

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    readable = {*scripts.get_heads(), *READABLE_OLDER}
    older = [r.revision for r in scripts.walk_revisions() if r.revision not in readable]
    if not older:
        pytest.skip("every older schema is one a read-only command reads as it is: none to refuse")
    make_run(tmp_path)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (older[0],))
    with pytest.raises(StoreError, match="idealab run --workdir"):
        Store.open_readonly(tmp_path)
