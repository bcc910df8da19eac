"""What runs is what the run records: a queued experiment's copy that an earlier job wrote is rebuilt from
the stored change before its job starts (a real loop run, real jobs, no sandbox to stop the writer)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.ideators.base import IdeaProposal, IdeationRequest
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.manifest import load_manifest
from idealab.search.loop import Search, SearchConfig, SearchEvent
from idealab.status import Status
from idealab.store import Store
from searchrun import run_to_end

NOISY = Path(__file__).parent / "envs" / "noisy"  # loss = 2 - GAIN + noise of sd 0.1

# Experiment 1's job waits until experiment 2's change is accepted (its row is `ready`, read from the
# run's database, which a job outside the sandbox can reach), then rewrites experiment 2's queued copy so
# that it would score 2 - 5 = -3: a change that experiment 2's stored diff does not show.
WRITER = """--- a/train.py
+++ b/train.py
@@ -8,1 +8,13 @@
-DUMMY = 0.0
+DUMMY = 0.0
+import pathlib
+import sqlite3
+db = sqlite3.connect("file:../../../idealab.db?mode=ro", uri=True, timeout=30)
+while db.execute("SELECT status FROM ideas WHERE id = 2").fetchone() != ("ready",):
+    time.sleep(0.05)
+queued = pathlib.Path("../../00002/code/train.py")
+queued.write_text(queued.read_text().replace("GAIN = 0.0", "GAIN = 5.0"))
+print("rewrote the queued copy of experiment 2", flush=True)
+
+
+
+
"""
QUEUED = "--- a/train.py\n+++ b/train.py\n@@ -8,1 +8,1 @@\n-DUMMY = 0.0\n+DUMMY = 1.0\n"


class TwoIdeas:
    name = "fixed"

    async def propose(self, manifest, request: IdeationRequest) -> list[IdeaProposal]:
        return [IdeaProposal("Rewrite the next experiment's copy.", WRITER), IdeaProposal("Set DUMMY to 1.", QUEUED)]


class SecondWaitsForFirstJob(ReadyDiffImplementer):
    """Experiment 2's change is accepted only once experiment 1's job has started: 2 waits in the queue."""

    def __init__(self) -> None:
        super().__init__()
        self.first_started = asyncio.Event()

    def on_event(self, event: SearchEvent) -> None:
        if event.kind == "started" and event.idea_id == 1:
            self.first_started.set()

    async def implement(self, manifest, idea_id, proposal, workspace):
        if idea_id == 2:
            await self.first_started.wait()
        return await super().implement(manifest, idea_id, proposal, workspace)


def test_a_queued_copy_written_by_an_earlier_job_is_rebuilt_from_its_stored_change(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    store = Store.open(workdir)
    run = store.create_run("noisy", str(NOISY), None, {}, {"metric": {"goal": "minimize", "name": "loss"}})
    backend = LocalBackend(SlotPool.cpu_only(1), sandbox="off")  # one slot: experiment 2 waits for 1
    config = SearchConfig(epochs=1, ideas_per_epoch=2, baseline_runs=0, baseline_value=2.0, confirm_top=0)
    implementer = SecondWaitsForFirstJob()
    search = Search(
        load_manifest(NOISY), store, run.id, backend, TwoIdeas(), implementer, config, workdir,
        on_event=implementer.on_event, job_slots=1,
    )  # fmt: skip

    run_to_end(search, backend)
    writer, queued = store.ideas(run.id, epoch=0)
    assert writer.status is Status.OK
    log = workdir / "experiments" / "00001" / "logs" / "i1-a1" / "stdout.log"
    assert "rewrote the queued copy of experiment 2" in log.read_text()
    # experiment 2 ran its own change only: true loss 2 (GAIN 0), not the -3 of the rewritten copy
    assert queued.status is Status.OK and queued.metric is not None and queued.metric > 1.0
    assert queued.final_diff is not None and "+DUMMY = 1.0" in queued.final_diff and "5.0" not in queued.final_diff
    ran = (workdir / "experiments/00002/code/train.py").read_text()
    assert "GAIN = 0.0" in ran and "DUMMY = 1.0" in ran
