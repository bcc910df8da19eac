"""The search loop as pure logic: an in-process backend, the real store, the mutate ideator."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest

from idealab.errors import RunFault
from idealab.executor.base import JobSpec
from idealab.executor.slots import SlotPool
from idealab.ideators.base import IdeaKind, IdeaProposal, IdeationRequest, PastIdea
from idealab.ideators.mutate import MutateIdeator
from idealab.ideators.prompting import ideation_prompt
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.manifest import Goal, load_manifest
from idealab.search.journal import Journal
from idealab.search.loop import Search, SearchConfig
from idealab.status import Status
from idealab.store import Store
from simbackend import SimBackend

QUAD = Path(__file__).parent / "envs" / "quad"


def quad_script(duration: float = 0.05):
    def script(spec: JobSpec) -> tuple[float, str, int]:
        text = (spec.workspace / "train.py").read_text()
        x = float(re.search(r"^X = (.+)$", text, re.M).group(1))
        y = float(re.search(r"^Y = (.+)$", text, re.M).group(1))
        loss = (x - 0.3) ** 2 + (y - 1.0) ** 2 + 1.0
        return duration, "@metric " + json.dumps({"name": "loss", "value": loss}) + "\n", 0

    return script


def make_search(tmp_path: Path, config: SearchConfig, backend=None, ideator=None):
    manifest = load_manifest(QUAD)
    store = Store.open(tmp_path / "run")
    run = store.create_run("quad", str(QUAD), None, {}, {"metric": {"goal": "minimize", "name": "loss"}})
    backend = backend or SimBackend(SlotPool.cpu_only(4), quad_script())
    search = Search(
        manifest, store, run.id, backend, ideator or MutateIdeator(), ReadyDiffImplementer(), config,
        tmp_path / "run",
    )
    return search, store, run, backend


def test_full_run_has_every_idea_once_with_baseline(tmp_path):
    search, store, run, _ = make_search(tmp_path, SearchConfig(epochs=3, ideas_per_epoch=6, seed=1))
    asyncio.run(search.run())
    ideas = store.ideas(run.id)
    experiments = [i for i in ideas if i.epoch >= 0]
    confirmations = [i for i in ideas if i.epoch == -2]
    assert len(experiments) == 3 * 6 and len([i for i in ideas if i.epoch == -1]) == 3  # + 3 baseline runs
    assert confirmations and len(confirmations) % 2 == 0  # 2 further runs per confirmed idea
    assert len({(i.epoch, i.idx) for i in ideas}) == len(ideas)
    assert all(i.status is Status.OK for i in ideas), [(i.id, i.status, i.reason) for i in ideas]
    assert store.get_run().baseline_metric == pytest.approx((0.5 - 0.3) ** 2 + 1.0 + 1.0)
    assert search.internal_errors == []


def test_epochs_split_into_exploit_and_explore(tmp_path):
    search, store, run, _ = make_search(tmp_path, SearchConfig(epochs=3, ideas_per_epoch=10, seed=2))
    asyncio.run(search.run())
    kinds = {e: [i.kind for i in store.ideas(run.id, epoch=e)] for e in range(3)}
    assert kinds[0] == [IdeaKind.INITIAL.value] * 10
    assert kinds[1].count(IdeaKind.EXPLOIT.value) == 5 and kinds[1].count(IdeaKind.EXPLORE.value) == 5
    assert kinds[2].count(IdeaKind.EXPLOIT.value) == 6 and kinds[2].count(IdeaKind.EXPLORE.value) == 4


def test_exploit_ideas_refine_winners(tmp_path):
    search, store, run, _ = make_search(
        tmp_path, SearchConfig(epochs=2, ideas_per_epoch=10, seed=3, next_epoch_at=1.0, confirm_top=0)
    )
    asyncio.run(search.run())
    baseline = store.get_run().baseline_metric
    winners = {i.id for i in store.ideas(run.id, epoch=0) if i.metric < baseline}
    exploit = [i for i in store.ideas(run.id, epoch=1) if i.kind == IdeaKind.EXPLOIT.value]
    assert winners, "the toy problem should give some epoch-0 winners"
    for idea in exploit:
        assert set(idea.payload["parents"]) <= winners
        assert idea.payload["parents"]


def test_same_seed_same_ideas_when_epochs_are_synchronous(tmp_path):
    config = SearchConfig(epochs=2, ideas_per_epoch=6, seed=7, next_epoch_at=1.0)
    texts = []
    for sub in ("a", "b"):
        search, store, run, _ = make_search(tmp_path / sub, config)
        asyncio.run(search.run())
        # the ideas; which of them get confirmation runs depends on the order their first runs finished
        texts.append([i.text for i in store.ideas(run.id) if i.epoch >= 0])
    assert texts[0] == texts[1]


def test_next_epoch_ideation_waits_for_the_configured_fraction(tmp_path):
    class Recording(MutateIdeator):
        def __init__(self, store_ref):
            super().__init__()
            self.store_ref = store_ref
            self.done_at_request: dict[int, int] = {}

        async def propose(self, manifest, request: IdeationRequest):
            store, run_id = self.store_ref
            if request.epoch > 0 and request.epoch not in self.done_at_request:
                prev = store.ideas(run_id, epoch=request.epoch - 1)
                self.done_at_request[request.epoch] = sum(i.status.terminal for i in prev)
            return await super().propose(manifest, request)

    holder: list = [None, None]
    ideator = Recording(holder)
    search, store, run, _ = make_search(
        tmp_path, SearchConfig(epochs=3, ideas_per_epoch=8, seed=4, next_epoch_at=0.5), ideator=ideator
    )
    holder[0], holder[1] = store, run.id
    ideator.store_ref = (store, run.id)
    asyncio.run(search.run())
    assert ideator.done_at_request[1] >= 4 and ideator.done_at_request[2] >= 4
    # overlap: the next epoch started before the previous one was complete
    assert min(ideator.done_at_request.values()) < 8
    assert (
        len(store.ideas(run.id, epoch=0)) + len(store.ideas(run.id, epoch=1)) + len(store.ideas(run.id, epoch=2))
        == 3 * 8
    )


def test_jobs_start_as_soon_as_slots_free(tmp_path):
    backend = SimBackend(SlotPool.cpu_only(2), quad_script(0.05))
    search, store, run, backend = make_search(
        tmp_path, SearchConfig(epochs=1, ideas_per_epoch=6, seed=5), backend=backend
    )
    asyncio.run(search.run())
    events = sorted([(s, 1) for s, _ in backend.intervals] + [(e, -1) for _, e in backend.intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2  # both slots busy at once, never more


def test_failures_are_statuses_not_numbers(tmp_path):
    def script(spec):
        text = (spec.workspace / "train.py").read_text()
        if "Y = 2.0" in text:  # baseline: fine
            return 0.01, '@metric {"name": "loss", "value": 2.04}\n', 0
        return 0.01, "", 1

    backend = SimBackend(SlotPool.cpu_only(2), script)
    search, store, run, _ = make_search(tmp_path, SearchConfig(epochs=1, ideas_per_epoch=4), backend=backend)
    asyncio.run(search.run())
    failed = [i for i in store.ideas(run.id, epoch=0) if i.status is Status.FAILED]
    assert failed and all(i.metric is None and "exit code 1" in i.reason for i in failed)


def test_unappliable_change_is_unimplementable(tmp_path):
    class Broken(MutateIdeator):
        async def propose(self, manifest, request):
            bad = "--- a/train.py\n+++ b/train.py\n@@ -1,1 +1,1 @@\n-NOT IN FILE\n+X = 9\n"
            return [IdeaProposal("a broken change", bad, {}) for _ in range(request.count)]

    search, store, run, _ = make_search(tmp_path, SearchConfig(epochs=1, ideas_per_epoch=2), ideator=Broken())
    asyncio.run(search.run())
    ideas = store.ideas(run.id, epoch=0)
    assert all(i.status is Status.UNIMPLEMENTABLE and i.reason for i in ideas)
    assert store.code_changes(ideas[0].id)[0].outcome == "rejected"


BROKEN_DIFF = "--- a/train.py\n+++ b/train.py\n@@ -1,1 +1,1 @@\n-NOT IN FILE\n+X = 9\n"


class HalfBroken(MutateIdeator):
    """Epoch 0: every other idea comes with a change that cannot be applied (unimplementable at once).
    Records how many epoch-0 experiments had a result when epoch 1's ideation began."""

    def __init__(self) -> None:
        super().__init__()
        self.store: Store | None = None
        self.run_id = 0
        self.results_at_epoch_1: int | None = None
        self.settled_at_epoch_1: int | None = None

    async def propose(self, manifest, request: IdeationRequest):
        proposals = await super().propose(manifest, request)
        if request.epoch == 0:
            return [IdeaProposal("a broken change", BROKEN_DIFF, {}) if k % 2 else p for k, p in enumerate(proposals)]
        if self.results_at_epoch_1 is None:
            prev = self.store.ideas(self.run_id, epoch=0)
            self.results_at_epoch_1 = sum(i.status.has_result for i in prev)
            self.settled_at_epoch_1 = sum(i.status.terminal for i in prev)
        return proposals


def test_the_epoch_gate_counts_only_experiments_that_ran(tmp_path):
    ideator = HalfBroken()
    backend = SimBackend(SlotPool.cpu_only(4), quad_script(0.3))
    search, store, run, _ = make_search(
        tmp_path, SearchConfig(epochs=2, ideas_per_epoch=8, seed=4, next_epoch_at=0.5), backend, ideator
    )
    ideator.store, ideator.run_id = store, run.id
    asyncio.run(search.run())
    epoch0 = store.ideas(run.id, epoch=0)
    assert sum(i.status is Status.UNIMPLEMENTABLE for i in epoch0) == 4
    # half of 8 ideas must have run: the 4 unimplementable ones are no evidence for the next epoch
    assert ideator.results_at_epoch_1 is not None and ideator.results_at_epoch_1 >= 4


def test_the_gate_opens_when_an_epoch_settles_with_too_few_results(tmp_path):
    class AllBroken(MutateIdeator):
        async def propose(self, manifest, request):
            return [IdeaProposal("a broken change", BROKEN_DIFF, {}) for _ in range(request.count)]

    search, store, run, _ = make_search(
        tmp_path, SearchConfig(epochs=2, ideas_per_epoch=3, next_epoch_at=1.0), ideator=AllBroken()
    )
    asyncio.run(search.run())
    assert len(store.ideas(run.id, epoch=1)) == 3
    assert all(i.status is Status.UNIMPLEMENTABLE for i in store.ideas(run.id) if i.epoch >= 0)


class RecordingExploit(MutateIdeator):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[IdeationRequest] = []

    async def propose(self, manifest, request: IdeationRequest):
        if request.kind is IdeaKind.EXPLOIT:
            self.requests.append(request)
        return await super().propose(manifest, request)


@pytest.mark.parametrize("ideas_can_win", [True, False], ids=["winners", "none-beat-the-baseline"])
def test_exploit_requests_say_truthfully_whether_their_ideas_beat_the_baseline(tmp_path, ideas_can_win):
    def script(spec: JobSpec) -> tuple[float, str, int]:
        changed = "X = 0.5\nY = 2.0\n" not in (spec.workspace / "train.py").read_text()
        # every change beats the baseline's 2.04, or every change is worse than it
        loss = 2.04 + (0.0 if not changed else -1.0 if ideas_can_win else 1.0)
        return 0.01, "@metric " + json.dumps({"name": "loss", "value": loss}) + "\n", 0

    ideator = RecordingExploit()
    backend = SimBackend(SlotPool.cpu_only(4), script)
    search, store, run, _ = make_search(
        tmp_path, SearchConfig(epochs=2, ideas_per_epoch=6, seed=3, next_epoch_at=1.0, confirm_top=0), backend, ideator
    )  # single-run behaviour: a single result may be called a win (confirmed wins: test_confirmation.py)
    asyncio.run(search.run())
    assert ideator.requests and all(r.history for r in ideator.requests)
    for request in ideator.requests:
        assert request.history_beat_baseline is ideas_can_win
        _, prompt = ideation_prompt(search.manifest, request)
        if ideas_can_win:
            assert "## Ideas that beat the baseline" in prompt and "worse than the baseline" not in prompt
        else:
            assert "(none beat the baseline)" in prompt and "Ideas that beat the baseline" not in prompt
            assert all(f"worse than the baseline] {p.text}" in prompt for p in request.history)


def test_a_stored_change_that_no_longer_applies_on_resume_is_unimplementable_not_a_crash(tmp_path):
    root = tmp_path / "quad"
    shutil.copytree(QUAD, root)
    store = Store.open(tmp_path / "run")
    run = store.create_run("quad", str(root), None, {}, {"metric": {"goal": "minimize", "name": "loss"}})
    # A run stopped after implementing this idea: its accepted change is stored, its job never ran.
    idea = store.add_idea(run.id, 0, 0, IdeaKind.INITIAL.value, "Move X to 0.3.", "mutate", {})
    change = "--- a/train.py\n+++ b/train.py\n@@ -6,2 +6,2 @@\n-X = 0.5\n+X = 0.3\n Y = 2.0\n"
    store.update_idea(idea.id, status=Status.READY, applied_diff=change)
    # Before the resume the environment changed under the change.
    train = root / "train.py"
    train.write_text(train.read_text().replace("X = 0.5", "X = 0.7"))
    search = Search(
        load_manifest(root), store, run.id, SimBackend(SlotPool.cpu_only(2), quad_script()), MutateIdeator(),
        ReadyDiffImplementer(), SearchConfig(epochs=1, ideas_per_epoch=1), tmp_path / "run",
    )  # fmt: skip
    asyncio.run(search.run())
    stale = store.get_idea(idea.id)
    assert stale.status is Status.UNIMPLEMENTABLE, (stale.status, stale.reason)
    assert "no longer applies" in (stale.reason or "") and search.internal_errors == []
    shown = [PastIdea(stale.id, stale.epoch, stale.text, stale.status, stale.metric)]
    explore = IdeationRequest(1, IdeaKind.EXPLORE, 1, shown, [], 2.04, 0)
    assert "- [could not be implemented] Move X to 0.3." in ideation_prompt(search.manifest, explore)[1]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_next_epoch_at_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="next_epoch_at"):
        SearchConfig(next_epoch_at=fraction)


def test_a_job_in_flight_on_another_backend_is_not_taken_for_gone(tmp_path):
    search, store, run, _ = make_search(tmp_path, SearchConfig(epochs=1, ideas_per_epoch=2, seed=1))
    idea = store.add_idea(run.id, 0, 0, "initial", "an idea", "test", {})
    store.update_idea(idea.id, status=Status.RUNNING)
    store.add_job(idea.id, "i1-a1", "python train.py", "ws", "logs/stdout.log", "logs/stderr.log")
    store.job_started("i1-a1", 1.0, (), None, "slurm:42", "slurm")
    with pytest.raises(RunFault, match="resume with --backend slurm"):
        asyncio.run(search.run())
    (job,) = store.jobs(idea_id=idea.id)
    assert job.finished_at is None and store.get_idea(idea.id).status is Status.RUNNING  # left as it was


def test_the_loops_copy_of_its_ideas_is_what_the_database_holds(tmp_path):
    search, store, run, _ = make_search(tmp_path, SearchConfig(epochs=3, ideas_per_epoch=6, seed=2))
    asyncio.run(search.run())
    assert search.rows.all() == store.ideas(run.id)  # every write went through it: no reread per job needed


@pytest.mark.parametrize("seed", [3, 4])
def test_every_idea_in_the_final_top_k_has_all_its_confirmation_runs(tmp_path, seed):
    config = SearchConfig(epochs=3, ideas_per_epoch=8, seed=seed, confirm_top=2, confirm_seeds=3)
    search, store, run, _ = make_search(tmp_path, config)
    asyncio.run(search.run())
    journal = Journal.load(store, run.id, Goal.MINIMIZE, None, config.trials_needed)
    top = journal.top(2)
    assert len(top) == 2
    assert all(len(journal.estimate(idea).trials) == 3 for idea in top)
    assert all(journal.estimate(idea).confirmed for idea in top)
