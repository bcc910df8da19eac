"""The Slurm backend against a real single-node Slurm cluster (tests/slurmcluster.py): statuses, the
whole process tree gone after a timeout or cancel, GRES GPUs, the scrubbed environment, and a search that
survives a SIGKILL of its orchestrator by reattaching to the Slurm jobs it had submitted."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from idealab.executor.base import JobResult, JobSpec, JobStart
from idealab.executor.bwrap import SandboxPolicy
from idealab.executor.runner import run_job
from idealab.executor.slurm import ACTIVE_STATES, SlurmBackend, SlurmOptions
from idealab.manifest import load_manifest
from idealab.status import Status
from jobprocs import job_processes
from plantedquad import BASELINE_OUTCOMES, planted_env
from slurmcluster import slurm_cluster
from test_resume import slow_quad

pytestmark = pytest.mark.slow

QUAD = Path(__file__).parent / "envs" / "quad"
POLL = SlurmOptions(poll_s=0.3)
UNSANDBOXED = SandboxPolicy(mode="off")  # host pids, so that the test can see the job's processes


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    with slurm_cluster() as env:
        yield env


@pytest.fixture
def slurm_env(cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("SLURM_CONF", cluster["SLURM_CONF"])
    return cluster


def job(tmp_path: Path, job_id: str, command: str, timeout_s: float = 60, gpus: int = 0, **kw: object) -> JobSpec:
    workspace = tmp_path / job_id / "code"
    workspace.mkdir(parents=True)
    return JobSpec(job_id, workspace, command, timeout_s, gpus, log_dir=tmp_path / job_id / "logs", **kw)  # type: ignore[arg-type]


def run_all(*specs: JobSpec, backend: SlurmBackend | None = None) -> list[JobResult]:
    async def main() -> list[JobResult]:
        used = backend or SlurmBackend(POLL, grace_s=2)
        handles = [await used.submit(s) for s in specs]
        try:
            return [await used.wait(h) for h in handles]
        finally:
            await used.close()

    return asyncio.run(asyncio.wait_for(main(), 240))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def slurm_jobs_under(workdir: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    """(job id, state) of every Slurm job whose working directory is under `workdir`, in any state."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i %T %Z"], capture_output=True, text=True, env=env, check=True
    ).stdout
    rows = [line.split(maxsplit=2) for line in out.splitlines()]
    return [(r[0], r[1]) for r in rows if len(r) == 3 and r[2].startswith(str(workdir))]


TREE = "sh -c 'sleep 600 & echo $! >> pids; sleep 600 & echo $! >> pids; echo $$ >> pids; wait'"


def tree_pids(spec: JobSpec) -> list[int]:
    path = spec.workspace / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_ok_failed_and_timeout_statuses(slurm_env: dict[str, str], tmp_path: Path) -> None:
    manifest = load_manifest(QUAD)

    async def main() -> dict[str, Status]:
        backend = SlurmBackend(POLL, grace_s=1)
        outcomes = {}
        try:
            for name, command, timeout in (
                ("ok", "python train.py", 60.0),
                ("failed", "python -c 'raise SystemExit(3)'", 60.0),
                ("timeout", "sleep 600", 2.0),
            ):
                copy = tmp_path / name / "code"
                copy.parent.mkdir()
                subprocess.run(["cp", "-r", str(QUAD), str(copy)], check=True)
                changed = replace(manifest, run=replace(manifest.run, command=command, timeout_s=timeout))
                outcome = await run_job(backend, changed, copy, name, tmp_path / name / "logs")
                outcomes[name] = outcome.status
        finally:
            await backend.close()
        return outcomes

    assert asyncio.run(asyncio.wait_for(main(), 240)) == {
        "ok": Status.OK, "failed": Status.FAILED, "timeout": Status.TIMEOUT,
    }  # fmt: skip


def test_timeout_leaves_no_process_of_the_job(slurm_env: dict[str, str], tmp_path: Path) -> None:
    spec = job(tmp_path, "tree", TREE, timeout_s=3, sandbox=UNSANDBOXED)
    (result,) = run_all(spec)
    assert result.timed_out and result.exit_code is None
    pids = tree_pids(spec)
    assert len(pids) == 3 and not any(alive(p) for p in pids)
    assert all(state not in ACTIVE_STATES for _, state in slurm_jobs_under(tmp_path, slurm_env))


def test_cancel_stops_the_job_and_its_whole_tree(slurm_env: dict[str, str], tmp_path: Path) -> None:
    spec = job(tmp_path, "cancelled", TREE, sandbox=UNSANDBOXED)
    starts: list[JobStart] = []

    async def main() -> JobResult:
        backend = SlurmBackend(POLL, grace_s=2)
        handle = await backend.submit(spec, starts.append)
        try:
            while len(tree_pids(spec)) < 3:  # the job's processes exist: it runs on the node
                await asyncio.sleep(0.1)
            await backend.cancel(handle)
            return await backend.wait(handle)
        finally:
            await backend.close()

    result = asyncio.run(asyncio.wait_for(main(), 240))
    assert result.cancelled
    assert starts and starts[0].handle is not None and starts[0].handle.startswith("slurm:")
    assert not any(alive(p) for p in tree_pids(spec))
    (state,) = [state for _, state in slurm_jobs_under(tmp_path, slurm_env)]
    assert state not in ACTIVE_STATES  # stopped by its supervisor (COMPLETED) or by scancel (CANCELLED)


def test_two_gpu_jobs_get_distinct_devices(slurm_env: dict[str, str], tmp_path: Path) -> None:
    show = "sh -c 'echo CUDA=$CUDA_VISIBLE_DEVICES; sleep 4'"  # both hold their GPU at the same time
    specs = [job(tmp_path, f"gpu{i}", show, gpus=1) for i in range(2)]
    results = run_all(*specs)
    seen = sorted(r.stdout_path.read_text().strip() for r in results)
    assert seen == ["CUDA=0", "CUDA=1"]
    assert sorted(r.gpu_ids for r in results) == [(0,), (1,)]
    assert max(r.started_at for r in results) < min(r.finished_at for r in results)  # they overlapped


def test_the_job_gets_the_scrubbed_environment_only(
    slurm_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLANTED_API_TOKEN", "hunter2")  # the orchestrator's credential
    monkeypatch.setenv("PLANTED_PLAIN", "not-allowed")  # nor anything not on the allow-list
    (result,) = run_all(job(tmp_path, "env", "env"))
    env = dict(line.split("=", 1) for line in result.stdout_path.read_text().splitlines() if "=" in line)
    assert result.exit_code == 0
    assert "hunter2" not in result.stdout_path.read_text() and "PLANTED_PLAIN" not in env
    assert env["IDEALAB_JOB_ID"] == "env" and "SLURM_JOB_ID" in env


def run_command(workdir: Path, env: Path = QUAD) -> list[str]:
    return [
        sys.executable, "-m", "idealab", "run", "--env", str(env), "--preset", "slow", "--backend", "slurm",
        "--slurm-poll-s", "0.3", "--epochs", "1", "--ideas-per-epoch", "4", "--slots", "2", "--seed", "5",
        "--baseline-runs", "1", "--confirm-top", "0", "--workdir", str(workdir), "--quiet",
    ]  # fmt: skip


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # schema not created yet
            return []


def test_search_runs_on_slurm(slurm_env: dict[str, str], tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    done = subprocess.run(run_command(workdir), capture_output=True, text=True, env=slurm_env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    db = workdir / "idealab.db"
    assert {s for (s,) in query(db, "SELECT status FROM ideas")} == {"ok"}
    jobs = query(db, "SELECT handle, backend, status FROM jobs")
    assert len(jobs) == 5 and all(str(h).startswith("slurm:") and b == "slurm" and s == "ok" for h, b, s in jobs)
    assert len(slurm_jobs_under(workdir, slurm_env)) == 5  # one Slurm job per job: none submitted twice


def test_a_search_on_slurm_ends_with_the_right_statuses(slurm_env: dict[str, str], tmp_path: Path) -> None:
    """Baseline runs planted to fail and to hang past their limit (with children), beside ok ones: each
    ends with its status, the hung one's whole process tree is gone, and Slurm holds no job of the run."""
    workdir, command = tmp_path / "run", run_command(tmp_path / "run", planted_env(tmp_path, seed=5))
    command[command.index("--baseline-runs") + 1] = "3"
    command[command.index("--ideas-per-epoch") + 1] = "2"
    done = subprocess.run(command, capture_output=True, text=True, env=slurm_env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    db = workdir / "idealab.db"
    baseline = [s for (s,) in query(db, "SELECT status FROM ideas WHERE epoch = -1 ORDER BY idx")]
    assert baseline == list(BASELINE_OUTCOMES)
    jobs = query(db, "SELECT handle, status FROM jobs")
    assert sorted(s for _, s in jobs) == sorted([*BASELINE_OUTCOMES, "ok", "ok"])
    assert all(str(h).startswith("slurm:") for h, _ in jobs)
    shown = subprocess.run([sys.executable, "-m", "idealab", "status", "--workdir", str(workdir), "--json"],
                           capture_output=True, text=True, env=slurm_env, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert [e["status"] for e in status["experiments"]] == ["ok", "ok"]
    assert status["baseline"]["n"] == 1  # only the ok baseline run measured the bar
    assert job_processes(workdir) == []  # the timed-out job's children too
    assert all(state not in ACTIVE_STATES for _, state in slurm_jobs_under(workdir, slurm_env))


def test_sigkill_then_resume_reattaches_to_running_slurm_jobs(slurm_env: dict[str, str], tmp_path: Path) -> None:
    workdir, command = tmp_path / "run", run_command(tmp_path / "run", slow_quad(tmp_path, 6))
    db = workdir / "idealab.db"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=slurm_env)
    running_sql = "SELECT job_key, handle FROM jobs WHERE handle IS NOT NULL AND finished_at IS NULL"
    deadline = time.time() + 120
    while time.time() < deadline:
        ids = {str(h).removeprefix("slurm:") for _, h in query(db, running_sql)}
        if ids and any(i in ids and s == "RUNNING" for i, s in slurm_jobs_under(workdir, slurm_env)):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run never had a Slurm job running: " + proc.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    in_flight = dict(query(db, running_sql))
    states = dict(slurm_jobs_under(workdir, slurm_env))
    assert "RUNNING" in {states[str(h).removeprefix("slurm:")] for h in in_flight.values()}  # still running

    done = subprocess.run(command, capture_output=True, text=True, env=slurm_env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    jobs = {k: (h, s) for k, h, s in query(db, "SELECT job_key, handle, status FROM jobs")}
    for key, handle in in_flight.items():  # waited for or collected, under the same Slurm job
        assert jobs[key] == (handle, "ok"), jobs
    for key in in_flight:  # nothing ran a second time
        assert [k for k in jobs if k.startswith(key.split("-")[0] + "-")] == [key], jobs
    assert {s for (s,) in query(db, "SELECT status FROM ideas")} == {"ok"}
    # a job that waited for a slot had no Slurm job, nor had one claimed and found never submitted
    submitted = [h for h, s in jobs.values() if h is not None and not (s == "abandoned" and "pending" in str(h))]
    assert len(slurm_jobs_under(workdir, slurm_env)) == len(submitted)  # none submitted twice or orphaned
    per_job = "SELECT j.job_key, count(m.id) FROM jobs j JOIN metric_values m ON m.job_id = j.id GROUP BY j.id"
    counts = dict(query(db, per_job))
    for key in jobs:  # every metric value stored once
        (metrics,) = list((workdir / "experiments").glob(f"*/logs/{key}/metrics.jsonl"))
        assert counts[key] == len(metrics.read_text().splitlines()) >= 1


CRASHING = """
import asyncio, os, signal, sys
from pathlib import Path
from idealab.executor.base import JobSpec
from idealab.executor.bwrap import SandboxPolicy
from idealab.executor.slurm import SlurmBackend, SlurmOptions

async def main():
    backend = SlurmBackend(SlurmOptions(poll_s=0.3), grace_s=2)
    spec = JobSpec(sys.argv[1], Path(sys.argv[2]), sys.argv[3], 60, log_dir=Path(sys.argv[4]),
                   sandbox=SandboxPolicy(mode="off"))
    print(backend.claim(spec), flush=True)  # what the search loop stores before it submits
    await backend.submit(spec, lambda start: os.kill(os.getpid(), signal.SIGKILL))  # sbatch has answered
    await asyncio.Event().wait()

asyncio.run(main())
"""
COUNTED = "sh -c 'echo ran >> runs; while [ ! -e go ]; do sleep 0.1; done; echo finished'"  # until told


def killed_after_sbatch(spec: JobSpec, env: dict[str, str]) -> str:
    """Submit `spec` from an orchestrator process that SIGKILLs itself the moment sbatch has accepted the
    job, before its Slurm job id could be stored anywhere; the pending handle it claimed first."""
    argv = [sys.executable, "-c", CRASHING, spec.job_id, str(spec.workspace), spec.command, str(spec.log_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return done.stdout.strip()


def test_killed_before_the_job_id_was_stored_the_job_is_found_by_name(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """The orphan window: the job is found by the name claimed for it, waited for and collected once."""
    spec = job(tmp_path, "orphan", COUNTED)
    handle = killed_after_sbatch(spec, slurm_env)
    assert handle.startswith("slurm:pending:idealab-orphan-")
    assert len(slurm_jobs_under(tmp_path, slurm_env)) == 1  # Slurm has it; nobody stored its id

    async def main() -> tuple[JobResult, str | None]:
        backend = SlurmBackend(POLL, grace_s=2)
        try:
            adopted = await backend.reattach(spec, handle)
            assert adopted == "orphan"
            while not (spec.workspace / "runs").exists():  # it runs on the node
                await asyncio.sleep(0.1)
            (spec.workspace / "go").touch()
            result = await backend.wait(adopted)
            never = job(tmp_path, "never", COUNTED)  # claimed, then the orchestrator died before sbatch
            gone = await backend.reattach(never, backend.claim(never))
            return result, gone
        finally:
            await backend.close()

    result, gone = asyncio.run(asyncio.wait_for(main(), 240))
    assert result.exit_code == 0 and result.stdout_path.read_text() == "finished\n"
    assert (spec.workspace / "runs").read_text() == "ran\n"  # ran once
    assert gone is None
    assert len(slurm_jobs_under(tmp_path, slurm_env)) == 1  # and was submitted once


def test_killed_before_the_job_id_was_stored_a_job_that_ended_is_collected(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    spec = job(tmp_path, "ended", COUNTED)
    (spec.workspace / "go").touch()  # it ends at once, with no orchestrator
    handle = killed_after_sbatch(spec, slurm_env)
    deadline = time.time() + 120
    while not (spec.log_dir / "exit.json").exists():  # type: ignore[operator]
        assert time.time() < deadline, "the job never ended"
        time.sleep(0.1)

    async def main() -> JobResult:
        backend = SlurmBackend(POLL, grace_s=2)
        try:
            adopted = await backend.reattach(spec, handle)
            assert adopted == "ended"
            return await backend.wait(adopted)
        finally:
            await backend.close()

    result = asyncio.run(asyncio.wait_for(main(), 120))
    assert result.exit_code == 0 and result.stdout_path.read_text() == "finished\n"
    assert (spec.workspace / "runs").read_text() == "ran\n"
    assert len(slurm_jobs_under(tmp_path, slurm_env)) == 1


def test_a_search_killed_right_after_sbatch_resumes_without_an_orphan(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """The orchestrator dies the moment sbatch accepted its first job, before the job id was stored; the
    resumed search finds that job by the name claimed for it: judged once, no second Slurm job beside it."""
    workdir, command = tmp_path / "run", run_command(tmp_path / "run", slow_quad(tmp_path, 3))
    db = workdir / "idealab.db"
    crashpoint = [sys.executable, str(Path(__file__).parent / "crashpoint.py"), "idealab.executor.slurm.SlurmBackend"]
    crashed = subprocess.run([*crashpoint, *command[3:]], capture_output=True, text=True, env=slurm_env, timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    orphans = dict(query(db, "SELECT job_key, handle FROM jobs WHERE started_at IS NULL AND handle IS NOT NULL"))
    assert orphans and all(str(h).startswith("slurm:pending:idealab-") for h in orphans.values())
    submitted = slurm_jobs_under(workdir, slurm_env)
    assert submitted  # Slurm has the job nobody stored the id of

    done = subprocess.run(command, capture_output=True, text=True, env=slurm_env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    jobs = {k: (h, s) for k, h, s in query(db, "SELECT job_key, handle, status FROM jobs")}
    assert {s for (s,) in query(db, "SELECT status FROM ideas")} == {"ok"}
    found = [key for key in orphans if jobs[key][1] == "ok"]
    assert len(found) >= len(submitted)  # every job Slurm had was found and judged ...
    for key in found:  # ... and its idea ran no other job
        assert [k for k in jobs if k.startswith(key.split("-")[0] + "-")] == [key], jobs
    started = [h for h, _ in jobs.values() if str(h).startswith("slurm:") and str(h)[6:].isdigit()]
    assert len(slurm_jobs_under(workdir, slurm_env)) == len(started) + len(submitted)  # none twice
