"""Orchestrator overhead per job: N trivial jobs through the local backend, two idealab trees side by side.

    python benchmarks/overhead.py --old OLD_TREE [--new NEW_TREE] [--jobs 100] [--slots 1] [--repeats 3]

Each tree's `src` goes on PYTHONPATH of a fresh orchestrator process that runs `--jobs` jobs of `true`
through `LocalBackend` and reports its wall time, its own CPU time (the orchestrator's event loop) and its
children's CPU time (shells, supervisors, the jobs). Runs of the two trees alternate, `--repeats` times;
the medians are printed per job, with the new/old ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import asyncio, json, resource, sys, time
from pathlib import Path
from idealab.executor.base import JobSpec
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool

async def main(jobs, slots, work):
    backend = LocalBackend(SlotPool.cpu_only(slots))
    handles = []
    for i in range(jobs):
        spec = JobSpec(f"j{i}", work, "true", 60, log_dir=work / "logs" / f"j{i}")
        handles.append(await backend.submit(spec))
    results = [await backend.wait(h) for h in handles]
    assert all(r.exit_code == 0 for r in results), results[:3]

jobs, slots, work = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
before_self = resource.getrusage(resource.RUSAGE_SELF)
before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
asyncio.run(main(jobs, slots, work))
wall = time.perf_counter() - t0
after_self = resource.getrusage(resource.RUSAGE_SELF)
after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = lambda a, b: (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)
print(json.dumps({"wall_s": wall, "self_cpu_s": cpu(before_self, after_self),
                  "children_cpu_s": cpu(before_children, after_children)}))
"""


def measure(tree: Path, jobs: int, slots: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    with tempfile.TemporaryDirectory(prefix="idealab-overhead-") as work:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(jobs), str(slots), work],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the benchmark failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the baseline tree (e.g. a worktree of 6c93cf9)")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.repeats):
        for name in ("old", "new"):
            runs[name].append(measure(getattr(args, name), args.jobs, args.slots))
    print(f"{args.jobs} jobs of `true`, {args.slots} slot(s), median of {args.repeats} alternating runs, per job:")
    print(f"{'':>22} {'old':>10} {'new':>10} {'new/old':>8}")
    for key, label in (
        ("wall_s", "wall (ms)"),
        ("self_cpu_s", "orchestrator CPU (ms)"),
        ("children_cpu_s", "children CPU (ms)"),
    ):
        old = statistics.median(r[key] for r in runs["old"]) / args.jobs * 1000
        new = statistics.median(r[key] for r in runs["new"]) / args.jobs * 1000
        print(f"{label:>22} {old:>10.2f} {new:>10.2f} {new / old:>8.2f}")


if __name__ == "__main__":
    main()
