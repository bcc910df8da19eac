"""What the integrity check costs when `idealab run` opens a big database.

`Store.open` (used by `run`) runs SQLite's `PRAGMA quick_check` before migrating, so that a damaged
database is refused before anything is written; `Store.open_readonly` (used by `status`) does not. This
builds a database of N experiments (each with an applied and a final diff, two code changes, a job and
ten metric values, sized like an LLM run's) and times both opens side by side.

    python benchmarks/store_open.py --experiments 10000
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from idealab.store import Store


def build(workdir: Path, n: int, diff_bytes: int) -> None:
    Store.open(workdir).close()  # the schema
    rng = random.Random(0)
    diff = "".join(rng.choice("abcdefghij +-\n") for _ in range(diff_bytes))
    with sqlite3.connect(workdir / "idealab.db") as db:
        db.execute(
            "INSERT INTO runs (id, created_at, env_name, env_root, config, manifest) "
            "VALUES (1, 0, 'quad', 'envs/quad', '{}', '{}')"
        )
        db.executemany(
            "INSERT INTO ideas (id, run_id, epoch, idx, kind, text, ideator, payload, status, metric, created_at,"
            " attempts, applied_diff, final_diff) VALUES (?, 1, ?, ?, 'explore', ?, 'llm', '{}', 'ok', ?, 0, 1, ?, ?)",
            [(i, i // 80, i % 80, f"idea {i} " * 20, rng.random(), diff, diff) for i in range(1, n + 1)],
        )
        db.executemany(
            "INSERT INTO code_changes (idea_id, attempt, sample, format, diff, outcome, created_at)"
            " VALUES (?, 1, ?, 'diff', ?, 'applied', 0)",
            [(i, s, diff) for i in range(1, n + 1) for s in range(2)],
        )
        db.executemany(
            "INSERT INTO jobs (id, idea_id, job_key, command, gpu_ids, workspace, stdout_path, stderr_path, status,"
            " submitted_at, timed_out) VALUES (?, ?, ?, 'python train.py', '', 'ws', 'o', 'e', 'ok', 0, 0)",
            [(i, i, f"i{i}-a1") for i in range(1, n + 1)],
        )
        db.executemany(
            "INSERT INTO metric_values (job_id, name, value, step, source) VALUES (?, 'loss', ?, ?, 'line')",
            [(i, rng.random(), s) for i in range(1, n + 1) for s in range(10)],
        )


def timed(open_store: object, workdir: Path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        open_store(workdir).close()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--diff-bytes", type=int, default=4_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build(workdir, args.experiments, args.diff_bytes)
        size_mb = (workdir / "idealab.db").stat().st_size / 1e6
        readonly = timed(Store.open_readonly, workdir, args.repeats)
        full = timed(Store.open, workdir, args.repeats)
    print(f"{args.experiments} experiments, database {size_mb:.1f} MB (best of {args.repeats})")
    print(f"Store.open_readonly (status)              {readonly * 1000:8.1f} ms")
    print(f"Store.open (run: quick_check + migrate)   {full * 1000:8.1f} ms")
    print(f"ratio open / open_readonly: {full / readonly:.1f}x")


if __name__ == "__main__":
    main()
