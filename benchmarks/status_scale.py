"""How long does `idealab status --json` take, and how much memory, as a run grows?

Builds runs of 200, 2,000 and 10,000 experiments directly through the Store (each experiment: an idea
with a ~300-character text, a knob payload and a ~1.5 KB diff, one job that started and finished, five
metric values; one in five failed with a 1 KB stderr tail as its reason), then times
`python -m idealab status --json` on each as a separate process and reads that process's CPU time
(user + system) and peak RSS from `os.wait4`. On a shared machine the wall time moves with the load; the
CPU time much less. Given `--old-src` (the `src` directory of an older checkout, e.g. a worktree of commit
6c93cf9), the old code is measured on its own copy of each run (built with its own Store, so its schema is
its own) side by side with this checkout's.

    python benchmarks/status_scale.py [--old-src /tmp/old6c/src] [--sizes 200,2000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE_SRC = Path(__file__).resolve().parent.parent / "src"
DIFF = "".join(f"-old line {i} of train.py\n+new line {i} of train.py, changed by the idea\n" for i in range(20))
REASON = "exit code 1\n" + "".join(f"  File \"train.py\", line {i}, in step: [/] error text\n" for i in range(18))


def build(workdir: Path, n: int) -> None:
    """Fill a fresh workdir with a run of `n` finished experiments (runs inside the measured side's code)."""
    from idealab.metrics import MetricValue
    from idealab.status import Status
    from idealab.store import JobEnd, Store

    manifest = {"name": "bench", "metric": {"name": "loss", "goal": "minimize"}}
    with Store.open(workdir) as store:
        run = store.create_run("bench", "/nowhere/bench", None, {"seed": 0, "epochs": 10}, manifest)
        store.set_baseline(run.id, 3.3, "ok", None)
        t = 1_700_000_000.0
        for i in range(n):
            epoch, idx = divmod(i, 80)
            text = f"Idea {i}: " + "replace the learning-rate schedule with a warm restart variant " * 5
            idea = store.add_idea(run.id, epoch, idx, "explore", text, "llm", {"knobs": {"LR": 0.001 * (i % 7)}})
            store.update_idea(idea.id, applied_diff=DIFF, final_diff=DIFF, started_at=t + i)
            key = f"i{idea.id}-a1"
            store.add_job(idea.id, key, "python train.py", f"/w/{i}", f"/w/{i}/out", f"/w/{i}/err")
            store.job_started(key, t + i, (i % 8,), 1000 + i)
            failed = i % 5 == 0
            status = Status.FAILED if failed else Status.OK
            metric = None if failed else 3.0 + (i % 97) / 100
            values = [MetricValue("loss", 3.0 + s / 10, s) for s in range(5)]
            end = JobEnd(t + i + 60, 1 if failed else 0, False, status.value, None)
            store.finish_idea(
                idea.id, status, metric, REASON if failed else None, t + i + 60, job_key=key, values=values,
                job_end=end,
            )


def measure(src: Path, workdir: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one `idealab status --json` process run with `src`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "idealab", "status", "--json", "--workdir", str(workdir)]
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"status failed: {process.stderr.read().decode() if process.stderr else ''}")
    if process.stderr:
        process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # ru_maxrss: KiB on Linux


def check_output(src: Path, workdir: Path, n: int) -> None:
    """The measured command really printed the whole run (parsed as JSON)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "idealab", "status", "--json", "--workdir", str(workdir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert len(json.loads(done.stdout)["experiments"]) == n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-src", type=Path, help="src/ of the old checkout to compare against")
    parser.add_argument("--sizes", default="200,2000,10000")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the best is kept)")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # internal: build one run here
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build is not None:
        build(args.build, args.n)
        return
    sides = [("new", HERE_SRC)] + ([("old", args.old_src.resolve())] if args.old_src else [])
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{'experiments':>11} {'side':>4} {'wall s':>7} {'CPU s':>6} {'peak MB':>8}")
    results: dict[tuple[int, str], tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="idealab-status-bench-") as tmp:
        for n in sizes:
            for side, src in sides:
                workdir = Path(tmp) / f"{side}-{n}"
                env = {**os.environ, "PYTHONPATH": str(src)}
                subprocess.run([sys.executable, __file__, "--build", str(workdir), "--n", str(n)], env=env, check=True)
                check_output(src, workdir, n)
                runs = [measure(src, workdir) for _ in range(args.repeat)]
                best = (min(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs))
                results[(n, side)] = best
                print(f"{n:>11} {side:>4} {best[0]:>7.2f} {best[1]:>6.2f} {best[2]:>8.0f}", flush=True)
    if len(sides) == 2:
        print("ratio old/new:")
        for n in sizes:
            (nw, nc, nm), (ow, oc, om) = results[(n, "new")], results[(n, "old")]
            print(f"{n:>11} wall {ow / nw:5.1f}x  CPU {oc / nc:5.1f}x  memory {om / nm:5.1f}x")


if __name__ == "__main__":
    main()
