"""Kill the orchestrator mid-run (SIGKILL or Ctrl-C), run the same command again: nothing lost, nothing duplicated.

After a SIGKILL the jobs that ran go on without the orchestrator; the resumed run waits for those still
running and collects those that ended (the backend's `reattach`), so none of them runs a second time."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobprocs import job_processes

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




def started_jobs(db: Path) -> list[str]:
    """Jobs recorded as started that have not ended (so the run knows their handles)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            query = "SELECT job_key FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NULL"
            return [r[0] for r in conn.execute(query)]
        except sqlite3.OperationalError:  # schema not created yet
            return []


def exit_records_written(db: Path, job_keys: list[str]) -> bool:
    """Whether every one of these jobs' supervisors has written its exit record."""
    with sqlite3.connect(db) as conn:
        paths = [
            conn.execute("SELECT stdout_path FROM jobs WHERE job_key = ?", (key,)).fetchone()[0] for key in job_keys
        ]
    return all((Path(p).parent / "exit.json").is_file() for p in paths)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_after_results", "sig", "resume_after_jobs_ended"),
    [
        pytest.param(0, signal.SIGKILL, False, id="sigkill-first-jobs"),
        pytest.param(3, signal.SIGKILL, False, id="sigkill-after-3-results"),
        pytest.param(1, signal.SIGKILL, True, id="sigkill-then-jobs-end-without-orchestrator"),
        pytest.param(2, signal.SIGINT, False, id="ctrl-c-after-2-results"),
        pytest.param(2, signal.SIGTERM, False, id="sigterm-after-2-results"),
    ],
)
def test_killed_then_resumed(tmp_path, kill_after_results, sig, resume_after_jobs_ended):
    workdir = tmp_path / "run"
    db = workdir / "idealab.db"
    proc = subprocess.Popen(command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        rows = terminal_rows(db)
        if len(rows) >= kill_after_results and started_jobs(db) and job_processes(workdir):  # jobs run now
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run never reached the kill point: " + proc.stderr.read().decode()[-2000:])
    proc.send_signal(sig)  # SIGKILL: nothing runs after it; SIGINT: Ctrl-C, the jobs are stopped cleanly
    proc.wait(timeout=60)
    before = terminal_rows(db)
    with sqlite3.connect(db) as conn:
        in_flight = [r[0] for r in conn.execute("SELECT job_key FROM jobs WHERE finished_at IS NULL")]
        started = {r[0] for r in conn.execute("SELECT job_key FROM jobs WHERE started_at IS NOT NULL")}
    if resume_after_jobs_ended:  # the jobs run on without an orchestrator, to their end
        deadline = time.time() + 60
        running = [key for key in in_flight if key in started]
        while not exit_records_written(db, running):
            assert time.time() < deadline, "the orphaned jobs never ended"
            time.sleep(0.05)

    done = subprocess.run(command(workdir), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    after = terminal_rows(db)
    for idea_id, row in before.items():  # no finished result lost or changed
        assert after[idea_id] == row
    with sqlite3.connect(db) as conn:
        ideas = conn.execute("SELECT epoch, idx, status FROM ideas").fetchall()
        jobs = dict(conn.execute("SELECT job_key, status FROM jobs").fetchall())
        results_per_idea = conn.execute(
            "SELECT idea_id, count(*) FROM jobs WHERE status != 'abandoned' GROUP BY idea_id"
        ).fetchall()
        experiments = conn.execute("SELECT count(*) FROM ideas WHERE epoch >= 0").fetchone()[0]
    assert experiments == EPOCHS * IDEAS  # besides: the baseline's repeats and confirmation runs
    assert len({(e, i) for e, i, _ in ideas}) == len(ideas)
    assert all(s == "ok" for _, _, s in ideas), ideas
    assert all(count == 1 for _, count in results_per_idea)  # nothing ran twice to a result
    # the killed run's in-flight jobs: those that waited for a slot re-queued; those that had started were
    # waited for (still running) or collected (ended without it): not run again
    assert all(jobs[key] in ("abandoned", "ok") for key in in_flight)
    if sig == signal.SIGKILL:
        running = [key for key in in_flight if key in started]
        assert running and all(jobs[key] == "ok" for key in running), (running, jobs)
        assert all(sum(k.startswith(key.split("-")[0] + "-") for k in jobs) == 1 for key in running), jobs
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert proc.returncode == 128 + sig and in_flight == []  # stopped cleanly: nothing left running
        assert "abandoned" in jobs.values()
    assert job_processes(workdir) == []


def slow_quad(tmp_path: Path, sleep_s: float) -> Path:
    """The quad environment whose `slow` preset sleeps `sleep_s` per job."""
    env = tmp_path / "quad"
    shutil.copytree(QUAD, env)
    manifest = env / "idealab.toml"
    manifest.write_text(manifest.read_text().replace('QUAD_SLEEP_S = "1.5"', f'QUAD_SLEEP_S = "{sleep_s}"'))
    return env


@pytest.mark.slow
def test_sigkill_mid_job_then_resume_waits_for_the_running_job(tmp_path):
    env, workdir = slow_quad(tmp_path, 8), tmp_path / "run"
    db = workdir / "idealab.db"
    run = [
        sys.executable, "-m", "idealab", "run", "--env", str(env), "--preset", "slow", "--epochs", "1",
        "--ideas-per-epoch", "2", "--slots", "2", "--baseline-runs", "1", "--confirm-top", "0",
        "--workdir", str(workdir), "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not started_jobs(db):
        assert time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    with sqlite3.connect(db) as conn:
        query = "SELECT job_key, handle FROM jobs WHERE finished_at IS NULL AND started_at IS NOT NULL"
        in_flight = dict(conn.execute(query))
    supervisors = [int(handle.split(":")[1]) for handle in in_flight.values()]
    assert supervisors and all(Path(f"/proc/{pid}").exists() for pid in supervisors)  # still running

    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        jobs = {k: (h, s) for k, h, s in conn.execute("SELECT job_key, handle, status FROM jobs")}
        statuses = {s for (s,) in conn.execute("SELECT status FROM ideas")}
    for key, handle in in_flight.items():  # waited for under the same supervisor, not run again
        assert jobs[key] == (handle, "ok"), jobs
    for key in in_flight:  # its idea has no other job
        assert [k for k in jobs if k.startswith(key.split("-")[0] + "-")] == [key], jobs
    assert statuses == {"ok"}
    assert job_processes(workdir) == []


CRASHPOINT = Path(__file__).parent / "crashpoint.py"


@pytest.mark.slow
def test_killed_between_spawning_a_job_and_storing_its_handle_then_resumed(tmp_path):
    """The orphan window: the orchestrator dies the moment its first job's supervisor exists, before the
    job's handle is stored. The handle claimed before (`local:pending`) finds that job on resume: waited
    for and judged once, not run a second time beside the orphan."""
    env, workdir = slow_quad(tmp_path, 3), tmp_path / "run"
    db = workdir / "idealab.db"
    run = [
        "run", "--env", str(env), "--preset", "slow", "--epochs", "1", "--ideas-per-epoch", "2", "--slots", "2",
        "--baseline-runs", "1", "--confirm-top", "0", "--workdir", str(workdir), "--quiet",
    ]  # fmt: skip
    crashed = subprocess.run(
        [sys.executable, str(CRASHPOINT), "idealab.executor.local.LocalBackend", *run],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        orphans = dict(conn.execute("SELECT job_key, handle FROM jobs WHERE started_at IS NULL"))
    assert orphans and set(orphans.values()) == {"local:pending"}  # claimed; their start never got stored
    running = {job_id(pid) for pid in job_processes(workdir)} & set(orphans)
    assert running  # yet one runs (others claimed may not have been spawned yet: those run again)

    done = subprocess.run([sys.executable, "-m", "idealab", *run], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        jobs = dict(conn.execute("SELECT job_key, status FROM jobs"))
        statuses = {s for (s,) in conn.execute("SELECT status FROM ideas")}
    assert all(jobs[key] == "abandoned" for key in set(orphans) - running), jobs
    for key in running:  # found, waited for and judged: its idea has no other job
        assert jobs[key] == "ok", jobs
        assert [k for k in jobs if k.startswith(key.split("-")[0] + "-")] == [key], jobs
    assert statuses == {"ok"}
    assert job_processes(workdir) == []


def job_id(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(item.split(b"=", 1)[1].decode() for item in environ if item.startswith(b"IDEALAB_JOB_ID="))
