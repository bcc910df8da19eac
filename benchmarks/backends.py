"""Submit-to-start latency and orchestrator overhead per job, for each backend side by side in one run.

    python benchmarks/backends.py [--jobs 20] [--slots 2] [--slurm-poll-s 5 0.5] [--ray-address URL]

Each backend runs `--jobs` jobs of `true`, `--slots` at a time, the way a run does (sandbox "auto",
each job under its supervisor). Per job it reports:

- submit-to-start latency: from `submit()` to the moment the job's supervisor started the command (its
  exit.json's `started_at`), median and 90th percentile; for a cluster this is the scheduler's latency plus
  the time until the watcher sees the slot free;
- wall time per job: the whole batch's wall time / jobs;
- orchestrator CPU per job: the orchestrator process's own CPU time (its event loop), plus that of its
  short-lived client commands (sbatch, squeue, scontrol, scancel) for Slurm; never the jobs' or the
  supervisors' (for the local backend those are children too, so they are left out).

Slurm runs where `sbatch` reaches a cluster (SLURM_CONF; `../shared/tools/slurm-single-node.sh start`
sets one up); otherwise its rows say why they were skipped. Ray runs against `--ray-address`, else against a
throwaway local Ray cluster started here (2 CPUs, as tests/raycluster.py starts it) where ray is installed
(`pip install -r requirements-ray.txt`); its latency includes Ray's set-up of the job's runtime environment
(the working directory and idealab's package, unpacked once per content on the node). The work directory
is a temporary directory, which the single-node cluster shares. The 10,000-experiment scale figures are
`benchmarks/scale.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from idealab.executor.base import Backend, JobSpec
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.executor.slurm import SlurmBackend, SlurmOptions
from idealab.executor.supervisor import ExitRecord


@dataclass(frozen=True)
class Figures:
    name: str
    latency_median_s: float
    latency_p90_s: float
    wall_per_job_s: float
    cpu_per_job_ms: float


def cpu_s(children: bool) -> float:
    """This process's CPU time, plus its children's when `children`."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    if children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += kids.ru_utime + kids.ru_stime
    return total


async def run_batch(backend: Backend, work: Path, jobs: int, slots: int) -> tuple[list[float], float]:
    """Latencies (s) of `jobs` jobs of `true`, at most `slots` at once, and the batch's wall time."""
    gate = asyncio.Semaphore(slots)  # the search loop's job slots
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            workspace = work / f"j{i}" / "code"
            workspace.mkdir(parents=True)
            spec = JobSpec(f"j{i}", workspace, "true", 120, log_dir=work / f"j{i}" / "logs")
            submitted = time.time()
            result = await backend.wait(await backend.submit(spec))
            record = ExitRecord.read(result.stdout_path.parent)
            assert record is not None and result.exit_code == 0, result
            latencies.append(record.started_at - submitted)

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(i) for i in range(jobs)))
    finally:
        await backend.close()
    return latencies, time.monotonic() - started


def measure(name: str, make: Callable[[], Backend], jobs: int, slots: int, client_children: bool) -> Figures:
    work = Path(tempfile.mkdtemp(prefix="idealab-bench-backends-"))
    try:
        cpu_before = cpu_s(client_children)
        latencies, wall = asyncio.run(run_batch(make(), work, jobs, slots))
        cpu = cpu_s(client_children) - cpu_before
    finally:
        shutil.rmtree(work, ignore_errors=True)
    deciles = statistics.quantiles(latencies, n=10)
    return Figures(name, statistics.median(latencies), deciles[-1], wall / jobs, 1000 * cpu / jobs)


def slurm_problem() -> str | None:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Slurm client here ({exc})"
    if done.returncode != 0 or not done.stdout.strip():
        return f"no Slurm cluster answers ({done.stderr.strip() or 'no nodes'})"
    return None


def measure_ray(address: str | None, jobs: int, slots: int) -> tuple[Figures | None, str]:
    """The Ray row, against `address` or a local cluster started (and stopped) here."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from raycluster import start_cluster  # the tests' throwaway cluster: stops only what it started

    cluster = None
    if address is None:
        cluster, problem = start_cluster()
        if cluster is None:
            return None, problem
        address = cluster.address
    try:
        from idealab.executor.ray_backend import RayBackend

        # 0.5 CPU each: `slots` jobs fit at once on the 2-CPU local cluster
        return measure("ray", lambda: RayBackend(address, num_cpus=0.5), jobs, slots, False), ""
    finally:
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--slurm-poll-s", type=float, nargs="+", default=[5.0, 0.5])
    parser.add_argument("--ray-address", help="a Ray cluster's dashboard (default: start a local one here)")
    args = parser.parse_args()

    rows = [measure("local", lambda: LocalBackend(SlotPool.cpu_only(args.slots)), args.jobs, args.slots, False)]
    skipped = []
    problem = slurm_problem()
    for poll in args.slurm_poll_s:
        name = f"slurm (poll {poll:g} s)"
        if problem is not None:
            skipped.append(f"{name}: skipped, {problem}")
            continue

        def make(poll: float = poll) -> Backend:
            return SlurmBackend(SlurmOptions(poll_s=poll))

        rows.append(measure(name, make, args.jobs, args.slots, True))
    ray_row, ray_problem = measure_ray(args.ray_address, args.jobs, args.slots)
    if ray_row is not None:
        rows.append(ray_row)
    else:
        skipped.append(f"ray: skipped, {ray_problem}")

    print(f"{args.jobs} jobs of `true`, {args.slots} at a time, per job:")
    print(f"{'backend':<22} {'start latency median':>21} {'p90':>8} {'wall/job':>9} {'orch. CPU/job':>14}")
    local = rows[0]
    for r in rows:
        print(
            f"{r.name:<22} {r.latency_median_s:>19.3f} s {r.latency_p90_s:>6.2f} s {r.wall_per_job_s:>7.3f} s "
            f"{r.cpu_per_job_ms:>11.1f} ms   (x{r.latency_median_s / local.latency_median_s:.1f} latency, "
            f"x{r.cpu_per_job_ms / local.cpu_per_job_ms:.1f} CPU of local)"
        )
    for line in skipped:
        print(line)


if __name__ == "__main__":
    main()
