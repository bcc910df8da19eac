"""Orchestrator overhead per job: N jobs through the local backend, two idealab trees side by side.

    python benchmarks/overhead.py --old OLD_TREE [--new NEW_TREE] [--jobs 100] [--slots 1] [--repeats 3]
                                  [--metric-lines N]

Each tree's `src` goes on PYTHONPATH of a fresh orchestrator process that runs `--jobs` jobs of `true`
through `LocalBackend` and reports its wall time, its own CPU time (the orchestrator's event loop) and its
children's CPU time (shells, supervisors, the jobs). With `--metric-lines N` each job instead prints N
`@metric` lines and is run and judged through `run_job` (backend, reading the values, verdict).
Runs of the two trees alternate, `--repeats` times; the medians are printed per job, with the ratio.
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

MANIFEST = """
name = "overhead"
description = "benchmark"
[run]
command = "python job.py"
timeout_s = 600
[metric]
name = "loss"
goal = "minimize"
[files]
editable = ["job.py"]
"""

JOB = """
import sys
sys.stdout.write('@metric {"name": "loss", "value": 1.5}\\n' * LINES)
"""

CHILD = """
import asyncio, json, resource, sys, time
from pathlib import Path
from idealab.executor.base import JobSpec
from idealab.executor.local import LocalBackend
from idealab.executor.runner import run_job
from idealab.executor.slots import SlotPool
from idealab.manifest import load_manifest

async def main(jobs, slots, work, metric_lines):
    backend = LocalBackend(SlotPool.cpu_only(slots))
    if metric_lines:
        manifest = load_manifest(work)
        runs = [run_job(backend, manifest, work, f"j{i}", work / "logs" / f"j{i}") for i in range(jobs)]
        outcomes = await asyncio.gather(*runs)
        assert all(o.status.value == "ok" for o in outcomes), outcomes[0]
        return
    handles = []
    for i in range(jobs):
        spec = JobSpec(f"j{i}", work, "true", 60, log_dir=work / "logs" / f"j{i}")
        handles.append(await backend.submit(spec))
    results = [await backend.wait(h) for h in handles]
    assert all(r.exit_code == 0 for r in results), results[:3]

jobs, slots, work, metric_lines = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
before_self = resource.getrusage(resource.RUSAGE_SELF)
before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
asyncio.run(main(jobs, slots, work, metric_lines))
wall = time.perf_counter() - t0
after_self = resource.getrusage(resource.RUSAGE_SELF)
after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = lambda a, b: (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)
print(json.dumps({"wall_s": wall, "self_cpu_s": cpu(before_self, after_self),
                  "children_cpu_s": cpu(before_children, after_children)}))
"""


def measure(tree: Path, jobs: int, slots: int, metric_lines: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    with tempfile.TemporaryDirectory(prefix="idealab-overhead-") as work:
        if metric_lines:
            (Path(work) / "idealab.toml").write_text(MANIFEST)
            (Path(work) / "job.py").write_text(JOB.replace("LINES", str(metric_lines)))
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(jobs), str(slots), work, str(metric_lines)],
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
    parser.add_argument("--metric-lines", type=int, default=0, help="each job prints this many @metric lines")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.repeats):
        for name in ("old", "new"):
            runs[name].append(measure(getattr(args, name), args.jobs, args.slots, args.metric_lines))
    what = f"printing {args.metric_lines} @metric lines, judged" if args.metric_lines else "of `true`"
    print(f"{args.jobs} jobs {what}, {args.slots} slot(s), median of {args.repeats} alternating runs, per job:")
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
