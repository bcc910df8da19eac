"""What does the live dashboard cost per poll, and how big is the report, as a run grows?

Builds synthetic runs of N experiments through the Store (an idea, a 40-line diff, a job and a log each),
then measures side by side, on the same run: a dashboard poll while the database is unchanged (one
`PRAGMA data_version`, answered 304), a poll right after a write (the page data is rebuilt), and the size
and build time of the self-contained report.

    python benchmarks/dashboard.py [--sizes 100,400,1000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from idealab.status import Status
from idealab.store import Store
from idealab.views.data import read_snapshot
from idealab.views.html import render_report
from idealab.views.server import RunSource

DIFF = "--- a/train.py\n+++ b/train.py\n@@ -1,20 +1,20 @@\n" + "".join(
    f"-line {i} = {i}\n+line {i} = {i + 1}\n" for i in range(20)
)


def build_run(workdir: Path, n: int) -> None:
    with Store.open(workdir) as store:
        run = store.create_run("bench", "/envs/bench", None, {"epochs": 10, "ideas_per_epoch": max(1, n // 10)},
                               {"metric": {"name": "loss", "goal": "minimize"}})  # fmt: skip
        store.set_baseline(run.id, 3.0, "ok", None)
        for i in range(n):
            idea = store.add_idea(run.id, i // max(1, n // 10), i, "explore", f"Idea {i}: " + "word " * 60, "b", {})
            store.update_idea(idea.id, applied_diff=DIFF, final_diff=DIFF)
            logs = workdir / "experiments" / f"{idea.id:05d}" / "logs" / "j"
            logs.mkdir(parents=True)
            (logs / "stdout.log").write_text("".join(f"step {s} loss {3 - s / 100}\n" for s in range(100)))
            (logs / "stderr.log").write_text("")
            store.add_job(idea.id, f"j{idea.id}", "python train.py", workdir, logs / "stdout.log", logs / "stderr.log")
            store.job_started(f"j{idea.id}", time.time(), (), None)
            store.finish_idea(idea.id, Status.OK, 3.0 - i / n, None, time.time(), job_key=f"j{idea.id}")


def timed(fn: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(n: int, repeats: int) -> tuple[float, float, int, float]:
    """(poll unchanged s, poll after a write s, report bytes, report build s) for a run of n experiments."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build_run(workdir, n)
        source = RunSource(workdir)
        source.current()
        idle = timed(source.current, repeats)
        writer = Store.open(workdir)
        run = writer.get_run()
        assert run is not None
        counter = iter(range(10**6))

        def changed() -> None:
            # one small committed write (what the search does all the time), then the poll
            writer.set_baseline(run.id, 3.0 + next(counter) * 1e-9, "ok", None)
            source.current()

        busy = timed(changed, max(3, repeats // 5))
        writer.close()
        start = time.perf_counter()
        html = render_report(read_snapshot(workdir))
        report_s = time.perf_counter() - start
        source.close()
    return idle, busy, len(html.encode()), report_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,400,1000")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}")
    print(f"{'experiments':>11} {'poll unchanged':>15} {'poll after write':>17} {'ratio':>7} {'report MB':>10} "
          f"{'report s':>9}")  # fmt: skip
    for n in (int(x) for x in args.sizes.split(",")):
        idle, busy, size, report_s = measure(n, args.repeats)
        print(f"{n:>11} {idle * 1e3:>12.3f} ms {busy * 1e3:>14.1f} ms {busy / idle:>6.0f}x "
              f"{size / 1e6:>10.2f} {report_s:>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
