"""Per-job overhead of the bubblewrap sandbox: the same jobs through `LocalBackend`, with and without it.

    python benchmarks/sandbox_overhead.py [--jobs 30] [--repeats 3] [--command "python -c pass"]

Batches of `--jobs` jobs (one slot, one after the other) alternate between `sandbox="off"` and
`sandbox="require"`, `--repeats` times each; printed per job: the median wall time and the CPU time of the
orchestrator's children (supervisor, bwrap, the namespace's init, the job), side by side, with the ratio
and the difference. Needs a usable bwrap (`make sandbox`).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from idealab.executor.base import JobSpec
from idealab.executor.bwrap import bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _batch(mode: str, jobs: int, command: str, work: Path) -> tuple[float, float]:
    """(wall s, children CPU s) per job of one batch."""
    backend = LocalBackend(SlotPool.cpu_only(1), sandbox=mode)
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    for i in range(jobs):
        job_id = f"{mode}-{time.monotonic_ns()}-{i}"
        spec = JobSpec(job_id, work, command, 60, log_dir=work.parent / "logs" / job_id)
        result = await backend.wait(await backend.submit(spec))
        if result.exit_code != 0:
            raise SystemExit(f"job failed under sandbox={mode}: {result}")
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    await backend.close()
    return wall / jobs, cpu / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--command", default="python -c pass")
    args = parser.parse_args()
    problem = bwrap_problem()
    if problem is not None:
        sys.exit(f"cannot measure the sandbox here: {problem}")
    results: dict[str, list[tuple[float, float]]] = {"off": [], "require": []}
    with tempfile.TemporaryDirectory(prefix="idealab-sandbox-bench-") as tmp:
        work = Path(tmp) / "code"
        work.mkdir()
        for _ in range(args.repeats):
            for mode in ("off", "require"):
                results[mode].append(asyncio.run(_batch(mode, args.jobs, args.command, work)))
    print(f"{args.jobs} jobs of `{args.command}`, 1 slot, median of {args.repeats} alternating batches, per job:")
    print(f"{'':>22} {'no sandbox':>11} {'bwrap':>10} {'bwrap/no':>9} {'+ms':>8}")
    for index, label in ((0, "wall (ms)"), (1, "children CPU (ms)")):
        off = statistics.median(r[index] for r in results["off"]) * 1000
        on = statistics.median(r[index] for r in results["require"]) * 1000
        print(f"{label:>22} {off:11.2f} {on:10.2f} {on / off:9.2f} {on - off:8.2f}")


if __name__ == "__main__":
    main()
