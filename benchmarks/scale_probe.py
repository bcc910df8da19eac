"""One measurement of benchmarks/backends.py, run in a fresh interpreter with one side's `src` on PYTHONPATH.

    python benchmarks/scale_probe.py dashboard WORKDIR
    python benchmarks/scale_probe.py loop WORKDIR SCRATCH JOBS
    python benchmarks/scale_probe.py writes WORKDIR SCRATCH N
    python benchmarks/scale_probe.py local-jobs SCRATCH JOBS

Each prints one JSON object. CPU times are this process's own (user + system), the steadier figure on a
shared machine; wall times are shown beside them.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic_run  # noqa: E402  (beside this file)

from idealab.executor.base import JobResult, JobSpec, JobStart, OnStart  # noqa: E402
from idealab.executor.slots import SlotPool  # noqa: E402
from idealab.ideators.base import IdeaProposal, IdeationRequest  # noqa: E402
from idealab.store import Store  # noqa: E402


def cpu() -> float:
    return time.process_time()


def copy_run(workdir: Path, scratch: Path) -> Path:
    """A copy of the run's database (not its logs) to write to; the cached run stays as built."""
    target = scratch / "run"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(workdir / "idealab.db", target / "idealab.db")
    return target


# ---- the dashboard ---------------------------------------------------------------------------------------


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str], float]:
    started = time.perf_counter()
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            body = response.read()
            return response.status, body, dict(response.headers), time.perf_counter() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers), time.perf_counter() - started


def dashboard(workdir: Path) -> dict[str, Any]:
    """The dashboard's endpoints over real HTTP on loopback, served from this process."""
    import uvicorn

    from idealab.views.server import bind, create_app, url_of

    app = create_app([workdir])
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = url_of(sock)
    out: dict[str, Any] = {}
    c0 = cpu()
    status, body, headers, wall = get(base + "api/runs/0/data")  # the first request builds the page data
    out["data_build"] = {"wall_s": wall, "cpu_s": cpu() - c0, "mb": len(body) / 1e6, "status": status}
    middle = len(json.loads(body)["experiments"]) // 2
    etag = headers.get("etag") or headers.get("ETag") or ""
    c0 = cpu()
    polls = [get(base + "api/runs/0/data", {"If-None-Match": etag}) for _ in range(20)]
    out["poll_unchanged"] = {"wall_s": min(p[3] for p in polls), "cpu_s": (cpu() - c0) / 20, "status": polls[0][0]}
    c0 = cpu()
    status, body, _, wall = get(base + "runs/0")
    out["page"] = {"wall_s": wall, "cpu_s": cpu() - c0, "mb": len(body) / 1e6, "status": status}
    c0 = cpu()
    status, body, _, wall = get(base + f"api/runs/0/experiments?offset={middle}&limit=100")
    out["listing_page"] = {"wall_s": wall, "cpu_s": cpu() - c0, "mb": len(body) / 1e6, "status": status}
    if status == 200:
        last = json.loads(body)["experiments"][-1]["id"]
        c0 = cpu()
        status, body, _, wall = get(base + f"api/runs/0/experiments/{last}")
        out["detail"] = {"wall_s": wall, "cpu_s": cpu() - c0, "mb": len(body) / 1e6, "status": status}
    server.should_exit = True
    thread.join()
    return out


# ---- the search loop's work per job ----------------------------------------------------------------------


class InstantBackend:
    """Jobs that end at once with a metric line: what is left of a job's time is the orchestrator's."""

    name = "instant"

    def __init__(self, slots: int) -> None:
        self.pool = SlotPool.cpu_only(slots)
        self._tasks: dict[str, asyncio.Task[JobResult]] = {}
        self.rng = random.Random(0)

    def claim(self, spec: JobSpec) -> str:
        return f"instant:{spec.job_id}"

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        self._tasks[spec.job_id] = asyncio.create_task(self._run(spec, on_start))
        return spec.job_id

    async def _run(self, spec: JobSpec, on_start: OnStart | None) -> JobResult:
        log_dir = spec.log_dir or spec.workspace.parent / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        out, err = log_dir / "stdout.log", log_dir / "stderr.log"
        async with self.pool.lease(spec.gpus) as lease:
            start = time.time()
            if on_start:
                on_start(JobStart(spec.job_id, start, lease.gpu_ids, None, out, err))
            out.write_text('@metric {"name": "loss", "value": %r}\n' % (1.9 + self.rng.random() / 10))
            err.write_text("")
            await asyncio.sleep(0)
        return JobResult(spec.job_id, start, time.time(), 0, False, lease.gpu_ids, out, err)

    async def reattach(self, spec: JobSpec, handle: str) -> str | None:
        return None  # nothing outlives this process

    async def wait(self, handle: str) -> JobResult:
        return await self._tasks[handle]

    async def cancel(self, handle: str) -> None:
        self._tasks[handle].cancel()

    def logs(self, handle: str) -> tuple[Path, Path]:
        raise NotImplementedError

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()


class CountedIdeator:
    """Proposes `total` ideas in all (each a ready one-line change), then none."""

    name = "counted"

    def __init__(self, total: int) -> None:
        self.left = total

    async def propose(self, manifest: Any, request: IdeationRequest) -> list[IdeaProposal]:
        count = min(request.count, self.left)
        self.left -= count
        out = []
        for k in range(count):
            gain = round(0.001 * (self.left + k), 6)
            diff = f"--- a/train.py\n+++ b/train.py\n@@ -7,1 +7,1 @@\n-GAIN = 0.0\n+GAIN = {gain}\n"
            out.append(IdeaProposal(f"Set GAIN to {gain}.", diff))
        return out


def loop(workdir: Path, scratch: Path, jobs: int) -> dict[str, Any]:
    """Resume a copy of the run for `jobs` more ideas (a new epoch) and time the loop's work per job."""
    from idealab.ideators.ready import ReadyDiffImplementer
    from idealab.manifest import load_manifest
    from idealab.search.loop import Search, SearchConfig

    run_dir = copy_run(workdir, scratch)
    store = Store.open(run_dir)
    run = store.get_run()
    assert run is not None
    last_epoch = max(i.epoch for i in store.ideas(run.id))
    config = SearchConfig(epochs=last_epoch + 2, ideas_per_epoch=synthetic_run.PER_EPOCH, ideation_retries=0)
    marks: dict[str, float] = {}
    finished = 0

    def on_event(event: Any) -> None:
        nonlocal finished
        if event.kind == "idea" and "first" not in marks:
            marks["first"], marks["first_cpu"] = time.perf_counter(), cpu()
        if event.kind == "finished" and "first" in marks:
            finished += 1
            marks["last"], marks["last_cpu"] = time.perf_counter(), cpu()

    backend = InstantBackend(slots=4)
    search = Search(
        load_manifest(synthetic_run.ENV), store, run.id, backend, CountedIdeator(jobs), ReadyDiffImplementer(),
        config, run_dir, on_event=on_event, job_slots=4,
    )  # fmt: skip
    started, started_cpu = time.perf_counter(), cpu()

    async def go() -> None:
        try:
            await search.run()
        finally:
            await backend.close()

    asyncio.run(go())
    total, total_cpu = time.perf_counter() - started, cpu() - started_cpu
    store.close()
    assert not search.internal_errors, search.internal_errors[:1]
    shutil.rmtree(run_dir)
    return {
        "jobs": finished,
        "wall_per_job_s": (marks["last"] - marks["first"]) / finished,
        "cpu_per_job_s": (marks["last_cpu"] - marks["first_cpu"]) / finished,
        "resume_wall_s": total - (marks["last"] - marks["first"]),
        "resume_cpu_s": total_cpu - (marks["last_cpu"] - marks["first_cpu"]),
    }


# ---- the store's writes per experiment -----------------------------------------------------------------


def writes(workdir: Path, scratch: Path, n: int) -> dict[str, Any]:
    """What the loop writes for one experiment (idea, LLM call, code changes, job, result), `n` times."""
    run_dir = copy_run(workdir, scratch)
    with Store.open(run_dir) as store:
        run = store.get_run()
        assert run is not None
        have = len(store.ideas(run.id)) - 3  # the baseline's repeats are not experiments
        have -= len(store.ideas(run.id, epoch=-2))
        rng = random.Random(1)
        c0, t0 = cpu(), time.perf_counter()
        for i in range(have, have + n):
            synthetic_run.add_experiment(store, run.id, run_dir, i, rng)
        result = {"wall_per_experiment_s": (time.perf_counter() - t0) / n, "cpu_per_experiment_s": (cpu() - c0) / n}
    shutil.rmtree(run_dir)
    return result


# ---- the local backend: submit-to-start latency and overhead per job ---------------------------------------


def local_jobs(scratch: Path, jobs: int) -> dict[str, Any]:
    """`jobs` jobs of `true` through LocalBackend, one after another (a free slot each time). Latency: from
    `submit` to the backend's start notice (`on_start`, sent once the job's process exists)."""
    from idealab.executor.local import LocalBackend

    async def main() -> list[float]:
        backend = LocalBackend(SlotPool.cpu_only(1))
        latencies = []
        try:
            for i in range(jobs):
                told: list[float] = []  # when the backend says the job runs (its process exists)
                spec = JobSpec(f"j{i}", scratch, "true", 60, log_dir=scratch / "logs" / f"j{i}")
                submitted = time.perf_counter()
                handle = await backend.submit(spec, on_start=lambda _, told=told: told.append(time.perf_counter()))
                result = await backend.wait(handle)
                assert result.exit_code == 0, result
                latencies.append(told[0] - submitted)
        finally:
            await backend.close()
        return latencies

    scratch.mkdir(parents=True, exist_ok=True)
    c0, t0 = cpu(), time.perf_counter()
    latencies = sorted(asyncio.run(main()))
    return {
        "jobs": jobs,
        "latency_median_s": latencies[len(latencies) // 2],
        "latency_p90_s": latencies[int(len(latencies) * 0.9)],
        "wall_per_job_s": (time.perf_counter() - t0) / jobs,
        "cpu_per_job_s": (cpu() - c0) / jobs,
    }


def main() -> None:
    what, args = sys.argv[1], sys.argv[2:]
    if what == "dashboard":
        result = dashboard(Path(args[0]))
    elif what == "loop":
        result = loop(Path(args[0]), Path(args[1]), int(args[2]))
    elif what == "writes":
        result = writes(Path(args[0]), Path(args[1]), int(args[2]))
    elif what == "local-jobs":
        result = local_jobs(Path(args[0]), int(args[1]))
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
