"""The Ray backend against a real local Ray cluster (started and stopped by this module; skipped with the
reason where Ray cannot start). One cluster serves the whole module: Ray takes a while to start."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from idealab.executor.base import JobResult, JobSpec
from idealab.executor.bwrap import bwrap_problem
from plantedquad import BASELINE_OUTCOMES, planted_env
from raycluster import NODE_SECRET, REQUIRE_VAR, RayCluster, start_cluster

pytestmark = pytest.mark.slow
QUAD = Path(__file__).parent / "envs" / "quad"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    started, reason = start_cluster()
    if started is None:
        if os.environ.get(REQUIRE_VAR) == "1":  # CI: the tests against real engines must run
            pytest.fail(f"{REQUIRE_VAR}=1 but Ray cannot start: {reason}")
        pytest.skip(reason)
    try:
        yield started
    finally:
        started.stop()


def ray_job_processes() -> dict[int, str]:
    """Live processes of idealab jobs run by a Ray worker on this machine (they work in its private copy,
    a directory `idealab-ray-*`): pid -> IDEALAB_JOB_ID."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if "/idealab-ray-" not in cwd:
            continue
        for item in environ:
            if item.startswith(b"IDEALAB_JOB_ID=") and state != "Z":
                found[int(entry.name)] = item.split(b"=", 1)[1].decode()
    return found


def backend(cluster: RayCluster, **kwargs: object):  # type: ignore[no-untyped-def]
    from idealab.executor.ray_backend import RayBackend

    return RayBackend(cluster.address, grace_s=2, num_cpus=0.5, **kwargs)  # type: ignore[arg-type]


def job(tmp_path: Path, job_id: str, script: str, timeout_s: float = 120, gpus: int = 0) -> JobSpec:
    workspace = tmp_path / job_id / "workspace"
    workspace.mkdir(parents=True)
    (workspace / "job.py").write_text(textwrap.dedent(script))
    return JobSpec(job_id, workspace, "python job.py", timeout_s, gpus=gpus, log_dir=tmp_path / job_id / "logs",
                   metric_name="loss")  # fmt: skip


def test_gpu_jobs_get_distinct_devices(cluster: RayCluster, tmp_path: Path) -> None:
    # Each job waits (up to a minute) until the other has started: they hold their GPUs at the same time.
    gate = Path(f"/tmp/idealab-raygate-{os.getpid()}")
    gate.mkdir(exist_ok=True)
    script = f"""
        import os, pathlib, time
        gate = pathlib.Path({str(gate)!r})
        (gate / os.environ["IDEALAB_JOB_ID"]).touch()
        deadline = time.time() + 60
        while len(list(gate.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        print("together", len(list(gate.iterdir())) >= 2, "devices", os.environ["CUDA_VISIBLE_DEVICES"])
    """

    async def main() -> list[JobResult]:
        jobs = backend(cluster, sandbox="off")  # the gate is in this machine's /tmp
        handles = [await jobs.submit(job(tmp_path, name, script, gpus=1)) for name in ("g1", "g2")]
        results = [await jobs.wait(h) for h in handles]
        await jobs.close()
        return results

    try:
        results = asyncio.run(main())
    finally:
        shutil.rmtree(gate, ignore_errors=True)
    for result in results:
        assert result.exit_code == 0, result
        words = result.stdout_path.read_text().split()
        assert words[:2] == ["together", "True"]
        assert words[3] == ",".join(map(str, result.gpu_ids))  # what the job saw is what was recorded
    assert sorted(r.gpu_ids for r in results) == [(0,), (1,)]


def test_a_job_sees_no_credential_of_the_orchestrator_or_the_node(cluster: RayCluster, tmp_path: Path) -> None:
    orchestrator = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": "sk-orchestrator", "WANDB_API_KEY": "wandb-ok",
                    "DATABASE_URL": "postgres://secret"}  # fmt: skip
    spec = job(tmp_path, "env", "import json, os; print(json.dumps(dict(os.environ)))")
    spec = replace(spec, env={"RUN_ENV": "from-manifest"}, sandbox=replace(spec.sandbox, allow_env=("WANDB_API_KEY",)))

    async def main() -> JobResult:
        jobs = backend(cluster, base_env=orchestrator)
        result = await jobs.wait(await jobs.submit(spec))
        await jobs.close()
        return result

    result = asyncio.run(main())
    seen = json.loads(result.stdout_path.read_text())
    assert seen["RUN_ENV"] == "from-manifest" and seen["WANDB_API_KEY"] == "wandb-ok"  # asked for: they travel
    values = set(seen.values())
    assert not values & {"sk-orchestrator", "postgres://secret", NODE_SECRET}
    assert "IDEALAB_RAY_REQUEST" not in seen and "PYTHONPATH" not in seen


def test_cancel_and_timeout_leave_no_process(cluster: RayCluster, tmp_path: Path) -> None:
    tree = """
        import subprocess, sys, time
        for _ in range(2):  # children, and a grandchild under a shell
            subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"])
        print("started", flush=True)
        time.sleep(600)
    """

    async def main() -> tuple[JobResult, JobResult]:
        jobs = backend(cluster)
        cancel_me = await jobs.submit(job(tmp_path, "ray-cancel-me", tree))
        slow = await jobs.submit(job(tmp_path, "ray-slow", tree, timeout_s=3))
        timed_out = await jobs.wait(slow)
        deadline = time.monotonic() + 120
        while list(ray_job_processes().values()).count("ray-cancel-me") < 4:  # python, 2 shells, their sleeps
            assert time.monotonic() < deadline, "the job to cancel never started its children"
            await asyncio.sleep(0.2)
        await jobs.cancel(cancel_me)
        cancelled = await jobs.wait(cancel_me)
        await jobs.close()
        return cancelled, timed_out

    cancelled, timed_out = asyncio.run(main())
    assert timed_out.timed_out and timed_out.exit_code is None
    assert timed_out.stdout_path.read_text().startswith("started")  # its logs came back
    assert cancelled.cancelled
    assert not {pid: j for pid, j in ray_job_processes().items() if j in ("ray-cancel-me", "ray-slow")}


def run_command(cluster: RayCluster, env: Path, workdir: Path, seed: int) -> list[str]:
    return [
        sys.executable, "-m", "idealab", "run", "--env", str(env), "--epochs", "1", "--ideas-per-epoch", "2",
        "--baseline-runs", "3", "--confirm-top", "0", "--seed", str(seed), "--workdir", str(workdir), "--quiet",
        "--backend", "ray", "--ray-address", cluster.address, "--ray-num-cpus", "0.5", "--slots", "3",
    ]  # fmt: skip


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def test_a_search_on_ray_ends_with_the_right_statuses(cluster: RayCluster, tmp_path: Path) -> None:
    seed = 5
    workdir = tmp_path / "run"
    done = subprocess.run(run_command(cluster, planted_env(tmp_path, seed), workdir, seed), capture_output=True,
                          text=True, timeout=580, env=cli_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(workdir / "idealab.db") as conn:
        baseline = [r[0] for r in conn.execute("SELECT status FROM ideas WHERE epoch = -1 ORDER BY idx")]
        ideas = [r[0] for r in conn.execute("SELECT status FROM ideas WHERE epoch = 0")]
        handles = [r[0] for r in conn.execute("SELECT handle FROM jobs")] if _has_handles(conn) else []
    assert baseline == list(BASELINE_OUTCOMES)
    assert ideas == ["ok", "ok"]
    assert all(h.startswith("ray:") for h in handles)
    assert not ray_job_processes()  # the timed-out job's whole tree is gone


def _has_handles(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "handle" for row in conn.execute("PRAGMA table_info(jobs)"))


@pytest.mark.parametrize("when", ["accepted", "crash"])
def test_reattach_after_the_orchestrator_was_killed(cluster: RayCluster, tmp_path: Path, when: str) -> None:
    """A job submitted by an orchestrator that was then SIGKILLed is followed to its result by a new one:
    not run again (one Ray job with that id), its logs and metric collected. `crash`: the orchestrator died
    the moment Ray accepted the job, before anything stored its handle; the handle `claim` gave before the
    submission (the submission id, chosen here) finds it. A claimed job that never reached Ray is gone."""
    spec = job(tmp_path, "survivor", """import time; time.sleep(4); print('@metric {"name": "loss", "value": 0.25}')""")
    submitter = f"""
        import asyncio, os, signal
        from pathlib import Path
        from idealab.executor.base import JobSpec
        from idealab.executor.ray_backend import RayBackend

        async def main():
            jobs = RayBackend({cluster.address!r}, grace_s=2, num_cpus=0.5)
            spec = JobSpec("survivor", Path({str(spec.workspace)!r}), "python job.py", 120,
                           log_dir=Path({str(spec.log_dir)!r}), metric_name="loss")
            def on_start(start):
                if {when!r} == "crash":  # Ray has the job; nothing stored its handle
                    os.kill(os.getpid(), signal.SIGKILL)
                if start.gpu_ids == () and start.handle:
                    print(start.handle, flush=True)
            if {when!r} == "crash":
                print(jobs.claim(spec), flush=True)  # what the search loop stores before it submits
            await jobs.submit(spec, on_start)
            await asyncio.sleep(600)

        asyncio.run(main())
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(submitter)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=cli_env())  # fmt: skip
    try:
        assert proc.stdout is not None
        handle = proc.stdout.readline().strip()
        if when == "crash":
            assert proc.wait(timeout=300) == -signal.SIGKILL
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert handle.startswith("ray:idealab-survivor-")

    async def main() -> tuple[JobResult, str | None]:
        jobs = backend(cluster)
        followed = await jobs.reattach(spec, handle)
        assert followed == "survivor"
        result = await jobs.wait(followed)
        never = job(tmp_path, "never", "pass")
        gone = await jobs.reattach(never, jobs.claim(never))  # claimed, then killed before submit_job
        await jobs.close()
        return result, gone

    result, gone = asyncio.run(main())
    assert result.exit_code == 0 and not result.timed_out
    assert result.stdout_path.read_text() == '@metric {"name": "loss", "value": 0.25}\n'
    assert result.metrics_path is not None and "0.25" in result.metrics_path.read_text()
    assert gone is None
    from ray.job_submission import JobSubmissionClient

    listed = JobSubmissionClient(cluster.address).list_jobs()
    mine = [j for j in listed if (j.metadata or {}).get("idealab_log_dir") == str(spec.log_dir)]
    assert len(mine) == 1  # ran once


def test_a_running_jobs_output_arrives_while_it_runs(cluster: RayCluster, tmp_path: Path) -> None:
    """What the job prints reaches its stdout.log here while it runs (for the dashboard's log tail),
    not only with its result."""
    spec = job(tmp_path, "talky", """\
        import sys, time
        print("step 1", flush=True)
        print("warming up", file=sys.stderr, flush=True)
        time.sleep(6)
        print("step 2", flush=True)
    """)

    async def main() -> tuple[str, str, bool, JobResult]:
        jobs = backend(cluster)
        handle = await jobs.submit(spec)
        waiting = asyncio.ensure_future(jobs.wait(handle))
        stdout, stderr = jobs.logs(handle)
        while "step 1" not in (stdout.read_text() if stdout.exists() else ""):
            assert not waiting.done(), "the job ended before its first line arrived"
            await asyncio.sleep(0.1)
        seen, seen_err, running = stdout.read_text(), stderr.read_text(), not waiting.done()
        result = await waiting
        await jobs.close()
        return seen, seen_err, running, result

    seen, seen_err, running, result = asyncio.run(asyncio.wait_for(main(), 240))
    assert running and seen == "step 1\n" and seen_err == "warming up\n"  # during the job, before step 2
    assert result.exit_code == 0 and result.stdout_path.read_text() == "step 1\nstep 2\n"
    assert "IDEALAB-RAY-OUTPUT" not in (result.stdout_path.parent / "ray-driver.log").read_text()


def test_sigkill_mid_run_then_resume_reattaches_to_the_ray_jobs(cluster: RayCluster, tmp_path: Path) -> None:
    """The orchestrator is SIGKILLed while Ray runs its jobs; the same command again follows those jobs to
    their results instead of running them again: one Ray job per experiment, every result kept once."""
    seed = 7
    env = tmp_path / "quad"
    shutil.copytree(QUAD, env)
    manifest = (env / "idealab.toml").read_text().replace('QUAD_SLEEP_S = "0.2"', 'QUAD_SLEEP_S = "8"')
    (env / "idealab.toml").write_text(manifest)
    workdir = tmp_path / "run"
    db = workdir / "idealab.db"
    command = run_command(cluster, env, workdir, seed)
    command[command.index("--baseline-runs") + 1] = "1"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env())
    deadline = time.monotonic() + 300
    running: list[str] = []
    while not running:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("no job ever ran on Ray: " + (proc.stderr.read() if proc.stderr else b"").decode()[-2000:])
        keys = _in_flight_with_handles(db)
        running = [key for key in keys if key in set(ray_job_processes().values())]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    done = subprocess.run(command, capture_output=True, text=True, timeout=580, env=cli_env())
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM ideas")]
        experiments = conn.execute("SELECT count(*) FROM ideas WHERE epoch >= 0").fetchone()[0]
        jobs = dict(conn.execute("SELECT job_key, status FROM jobs").fetchall())
        per_idea = conn.execute("SELECT count(*) FROM jobs WHERE status != 'abandoned' GROUP BY idea_id").fetchall()
    assert experiments == 2 and set(statuses) == {"ok"}  # besides: the baseline run, any re-runs of a suspect
    assert all(count == 1 for (count,) in per_idea)  # nothing ran twice to a result
    assert all(jobs[key] == "ok" for key in running), (running, jobs)  # followed, not abandoned
    from ray.job_submission import JobSubmissionClient

    with sqlite3.connect(db) as conn:
        stdout_paths = dict(conn.execute("SELECT job_key, stdout_path FROM jobs").fetchall())
    log_dirs = [str(Path(stdout_paths[key]).parent) for key in running]
    listed = JobSubmissionClient(cluster.address).list_jobs()
    submitted = [(j.metadata or {}).get("idealab_log_dir") for j in listed]
    assert all(submitted.count(log_dir) == 1 for log_dir in log_dirs), (log_dirs, submitted)  # not run again
    assert not ray_job_processes()


def test_a_search_killed_right_after_ray_took_a_job_resumes_without_an_orphan(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """The orchestrator dies the moment Ray accepted its first job, before anything stored its handle; the
    resumed search follows that job by the submission id stored with it beforehand: judged once, no second
    Ray job for it."""
    from idealab.executor.ray_backend import RayBackend

    workdir = tmp_path / "run"
    db = workdir / "idealab.db"
    command = run_command(cluster, QUAD, workdir, 3)
    command[command.index("--baseline-runs") + 1] = "1"
    crashpoint = [sys.executable, str(Path(__file__).parent / "crashpoint.py"), f"{RayBackend.__module__}.RayBackend"]
    crashed = subprocess.run([*crashpoint, *command[3:]], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        orphans = dict(conn.execute("SELECT job_key, stdout_path FROM jobs WHERE started_at IS NULL"))
    from ray.job_submission import JobSubmissionClient

    def submitted() -> list[str]:
        return [(j.metadata or {}).get("idealab_log_dir", "") for j in JobSubmissionClient(cluster.address).list_jobs()]

    taken = [key for key, out in orphans.items() if str(Path(out).parent) in submitted()]
    assert taken  # Ray has a job nobody stored as started

    done = subprocess.run(command, capture_output=True, text=True, timeout=580, env=cli_env())
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        jobs = dict(conn.execute("SELECT job_key, status FROM jobs"))
        statuses = {s for (s,) in conn.execute("SELECT status FROM ideas")}
    assert statuses == {"ok"}
    for key in taken:  # followed to its result; its idea ran no other job, Ray ran it once
        assert jobs[key] == "ok", jobs
        assert [k for k in jobs if k.startswith(key.split("-")[0] + "-")] == [key], jobs
        assert submitted().count(str(Path(orphans[key]).parent)) == 1


def _in_flight_with_handles(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            query = "SELECT job_key FROM jobs WHERE handle IS NOT NULL AND finished_at IS NULL"
            return [r[0] for r in conn.execute(query)]
        except sqlite3.OperationalError:  # the schema is not there yet
            return []


SCORED = Path(__file__).parent / "envs" / "scored"
SCORED_TRAIN = """\
import json

import lib

X = 0.5

if __name__ == "__main__":
    print("@metric " + json.dumps({"name": "loss", "value": 0.0}))  # training's own claim: never the result
    lib.save_artefact(X)
"""


@pytest.mark.parametrize("sandbox", ["off", pytest.param("require", marks=pytest.mark.skipif(
    bwrap_problem() is not None, reason=f"no sandbox: {bwrap_problem()}"))])
def test_a_scored_job_on_ray_gets_the_scorers_metric(
    cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    """The scoring directory travels with the job, apart from the training's copy; the scorer runs on the
    node after training, in its own sandbox where one is required; its metric alone counts; the training
    budget holds there too."""
    from idealab.executor.runner import Outcome, copy_omits, run_job
    from idealab.executor.sandbox import copy_environment
    from idealab.manifest import load_manifest
    from idealab.paths import DATA_DIR_VAR
    from idealab.status import Status

    data = tmp_path / "data"
    (data / "scored").mkdir(parents=True)
    (data / "scored" / "val.txt").write_text("0.3\n")
    monkeypatch.setenv(DATA_DIR_VAR, str(data))  # travels to the node: the manifest allows it (below)
    env = tmp_path / "env"
    shutil.copytree(SCORED, env)
    (env / "train.py").write_text(SCORED_TRAIN)
    toml = (env / "idealab.toml").read_text()
    (env / "idealab.toml").write_text(
        toml.replace("timeout_s = 60\n", 'timeout_s = 60\nallow_env = ["IDEALAB_DATA_DIR"]\n', 1)
    )
    spinning = "import signal\nsignal.signal(signal.SIGUSR1, signal.SIG_IGN)\nwhile True:\n    pass\n"

    async def main() -> tuple[Outcome, Outcome]:
        jobs = backend(cluster, sandbox=sandbox)
        outcomes = []
        try:
            for job_id, preset, train in (("scored", None, SCORED_TRAIN), ("spins", "tight", spinning)):
                (env / "train.py").write_text(train)
                manifest = load_manifest(env, preset)
                workspace = copy_environment(env, tmp_path / job_id / "code", omit=copy_omits(manifest))
                run = run_job(jobs, manifest, workspace, job_id, tmp_path / job_id / "logs")
                outcomes.append(await asyncio.wait_for(run, 300))
        finally:
            await jobs.close()
        return outcomes[0], outcomes[1]

    scored, spins = asyncio.run(main())
    assert scored.status is Status.OK, scored.reason
    assert scored.metric == pytest.approx((0.5 - 0.3) ** 2 + 1.0)
    assert (tmp_path / "scored" / "logs" / "score-stdout.log").read_text().startswith("@metric")
    assert not (tmp_path / "scored" / "code" / "score.py").exists()  # hidden: never in the training's copy
    assert spins.status is Status.TIMEOUT and spins.reason is not None, spins.reason
    assert spins.reason.startswith("over its training budget (1 s of cpu time)")


def test_a_ray_job_filling_the_disk_is_stopped(cluster: RayCluster, tmp_path: Path) -> None:
    from idealab.executor.bwrap import Limits

    spec = job(tmp_path, "filler", """\
        import time
        with open("fill.bin", "wb") as out:
            for _ in range(200):
                out.write(b"x" * 2**20)
                out.flush()
                time.sleep(0.05)
    """)  # fmt: skip
    spec = replace(spec, sandbox=replace(spec.sandbox, limits=Limits(disk_mb=3)))

    async def main() -> JobResult:
        jobs = backend(cluster, sandbox="off")
        try:
            return await asyncio.wait_for(jobs.wait(await jobs.submit(spec)), 300)
        finally:
            await jobs.close()

    result = asyncio.run(main())
    assert result.limit_hit is not None and result.limit_hit.startswith("disk limit (3 MB) reached"), result
