"""The orchestrator at 100, 1,000 and 10,000 experiments (the backends side by side: benchmarks/backends.py).

    python benchmarks/scale.py [--sizes 100,1000,10000] [--cache DIR] [--old-src OLD/src] [--repeat 3]

Synthetic runs built through the real Store (benchmarks/synthetic_run.py; cached in `--cache`, built
once), then, each in a fresh interpreter with one side's `src` on PYTHONPATH (this checkout, and with
`--old-src` another one, e.g. `git archive main | tar -x -C /tmp/old`, on the same cached runs):
`idealab status --json`, `idealab status` (the table), `idealab report` (its size too), the dashboard's
endpoints over HTTP on loopback, the search loop's work per job when a run of that size is resumed for a
few more ideas (jobs that end at once), and the store's writes per experiment. CPU time (user + system of
the measuring process, read with `os.wait4` for the CLI) is the figure to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import synthetic_run

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"
PROBE = HERE / "scale_probe.py"


PYCACHE = Path(tempfile.gettempdir()) / "idealab-scale-pycache"


def side_env(src: Path) -> dict[str, str]:
    """The environment of a measured process: `src` on PYTHONPATH, and bytecode written and reused (in a
    cache of its own), as in an installed package: an environment that sets PYTHONDONTWRITEBYTECODE would
    otherwise compile every idealab module again in every measured command."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def probe(src: Path, *args: str) -> dict[str, Any]:
    """One measurement of scale_probe.py in a fresh interpreter with `src` on PYTHONPATH."""
    env = side_env(src)
    done = subprocess.run([sys.executable, str(PROBE), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} with {src} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---- scale ----------------------------------------------------------------------------------------------


def cli(src: Path, workdir: Path, *args: str) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one `idealab ...` process (stdout discarded)."""
    env = side_env(src)
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        command = [sys.executable, "-m", "idealab", *args, "--workdir", str(workdir)]
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    error = process.stderr.read().decode() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"idealab {' '.join(args)} failed with {src}: {error[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def best(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(min(column) for column in zip(*runs, strict=True))


def measure_side(src: Path, workdir: Path, scratch: Path, repeat: int, loop_jobs: int) -> dict[str, Any]:
    report = scratch / "report.html"
    cli(src, workdir, "status", "--json")  # once, unmeasured: compiles the side's modules into the cache
    out: dict[str, Any] = {
        # the latest 1,000 experiments listed (the default), and all of them
        "status --json": best([cli(src, workdir, "status", "--json") for _ in range(repeat)]),
        "status --json --limit 0": best([cli(src, workdir, "status", "--json", "--limit", "0") for _ in range(repeat)]),
        # the old side has no --limit: its table lists every experiment
        "status (table)": best([cli(src, workdir, "status") for _ in range(max(1, repeat - 1))]),
        "report": best([cli(src, workdir, "report", "--out", str(report)) for _ in range(max(1, repeat - 1))]),
    }
    out["report MB"] = report.stat().st_size / 1e6
    out["dashboard"] = probe(src, "dashboard", str(workdir))
    out["loop"] = min((probe(src, "loop", str(workdir), str(scratch), str(loop_jobs)) for _ in range(repeat)),
                      key=lambda r: r["cpu_per_job_s"])  # fmt: skip
    out["writes"] = min((probe(src, "writes", str(workdir), str(scratch), "20") for _ in range(repeat)),
                        key=lambda r: r["cpu_per_experiment_s"])  # fmt: skip
    return out


def print_scale(results: dict[tuple[int, str], dict[str, Any]], sizes: list[int], sides: list[str]) -> None:
    print("\n## scale: CLI commands (fresh process each; best of the repeats)")
    print(f"{'experiments':>11} {'side':>4} {'command':>23} {'wall s':>7} {'CPU s':>6} {'peak MB':>8}")
    for n in sizes:
        for side in sides:
            r = results[(n, side)]
            for command in ("status --json", "status --json --limit 0", "status (table)", "report"):
                wall, cpu, peak = r[command]
                print(f"{n:>11} {side:>4} {command:>23} {wall:>7.2f} {cpu:>6.2f} {peak:>8.0f}")
            print(f"{n:>11} {side:>4} {'report size':>23} {r['report MB']:>7.1f} MB")
    print("\n## scale: dashboard (HTTP on loopback; CPU of the serving process)")
    print(f"{'experiments':>11} {'side':>4} {'request':>22} {'wall ms':>8} {'CPU ms':>7} {'MB':>6} {'HTTP':>5}")
    for n in sizes:
        for side in sides:
            for request, r in results[(n, side)]["dashboard"].items():
                print(f"{n:>11} {side:>4} {request:>22} {r['wall_s'] * 1e3:>8.1f} {r['cpu_s'] * 1e3:>7.1f} "
                      f"{r.get('mb', 0):>6.2f} {r['status']:>5}")  # fmt: skip
    print("\n## scale: the search loop per job (resumed run, instant jobs) and the store's writes per experiment")
    print(f"{'experiments':>11} {'side':>4} {'jobs':>5} {'loop wall ms':>13} {'loop CPU ms':>12} "
          f"{'resume CPU s':>13} {'writes CPU ms':>14} {'writes wall ms':>15}")  # fmt: skip
    for n in sizes:
        for side in sides:
            loop, writes = results[(n, side)]["loop"], results[(n, side)]["writes"]
            write_cpu, write_wall = writes["cpu_per_experiment_s"] * 1e3, writes["wall_per_experiment_s"] * 1e3
            print(f"{n:>11} {side:>4} {loop['jobs']:>5} {loop['wall_per_job_s'] * 1e3:>13.1f} "
                  f"{loop['cpu_per_job_s'] * 1e3:>12.1f} {loop['resume_cpu_s']:>13.2f} "
                  f"{write_cpu:>14.1f} {write_wall:>15.1f}")  # fmt: skip
    if len(sides) == 2:
        print("\n## ratios old/new (CPU)")
        for n in sizes:
            old, new = results[(n, "old")], results[(n, "new")]
            commands = ("status --json", "status --json --limit 0", "status (table)", "report")
            parts = [f"{c} {old[c][1] / new[c][1]:.1f}x" for c in commands]
            parts.append(f"report size {old['report MB'] / new['report MB']:.1f}x")
            build_old, build_new = old["dashboard"]["data_build"], new["dashboard"]["data_build"]
            parts.append(f"dashboard build {build_old['cpu_s'] / build_new['cpu_s']:.1f}x")
            parts.append(f"loop per job {old['loop']['cpu_per_job_s'] / new['loop']['cpu_per_job_s']:.1f}x")
            print(f"{n:>11}: " + ", ".join(parts))


def readable_by(src: Path, workdir: Path, scratch: Path) -> Path:
    """The run as the side in `src` reads it: a side from before schema 0003 (the covering index of the
    LLM calls) refuses a newer database, so it gets a copy with that index dropped (its own schema)."""
    if (src / "idealab/store/migrations/versions/0003_llm_call_listing.py").is_file():
        return workdir
    copy = scratch / "schema-0002" / workdir.name
    if not copy.exists():
        shutil.copytree(workdir, copy)
        with closing(sqlite3.connect(copy / "idealab.db", isolation_level=None)) as db:
            db.execute("DROP INDEX IF EXISTS ix_llm_calls_listing")
            db.execute("UPDATE alembic_version SET version_num = '0002'")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return copy


def bench_scale(sizes: list[int], cache: Path, old_src: Path | None, repeat: int, loop_jobs: int) -> None:
    runs = synthetic_run.build(cache, sizes)
    sides = [("new", NEW_SRC)] + ([("old", old_src.resolve())] if old_src else [])
    results: dict[tuple[int, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="idealab-scale-") as tmp:
        for n in sizes:
            for side, src in sides:
                print(f"measuring {n} experiments, {side} side ...", file=sys.stderr, flush=True)
                workdir = readable_by(src, runs[n], Path(tmp))
                results[(n, side)] = measure_side(src, workdir, Path(tmp) / side, repeat, loop_jobs)
    print_scale(results, sizes, [s for s, _ in sides])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "idealab-scale")
    parser.add_argument("--old-src", type=Path, help="src/ of another checkout, measured beside this one")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop-jobs", type=int, default=20, help="new ideas per resumed run (confirmations add jobs)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start")  # fmt: skip
    sizes = sorted(int(s) for s in args.sizes.split(","))
    bench_scale(sizes, args.cache, args.old_src, args.repeat, args.loop_jobs)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
