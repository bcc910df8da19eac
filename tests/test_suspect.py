"""Suspect flags and the auditor, in real loop runs on the noisy environment (loss = 2 - GAIN + noise of sd
0.1 from each job's seed): an idea that sets GAIN = 5 scores about -3, a jump of 50 noise sds beyond the
best, which no idea of this environment can honestly make. The auditor is a real `Auditor` talking to the
loopback fake provider."""

from __future__ import annotations

from pathlib import Path

from fakeprovider import Reply
from idealab.auditor import Auditor, read_verdict
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.ideators.base import IdeaProposal, IdeationRequest
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.llm import LLMService, make_client
from idealab.manifest import Goal, load_manifest
from idealab.search.evidence import Evidence, Trial
from idealab.search.journal import CONFIRM_EPOCH, Journal
from idealab.search.loop import Search, SearchConfig
from idealab.search.suspect import AuditVerdict, bound_flag
from idealab.status import Status
from idealab.store import Store
from searchrun import run_to_end

NOISY = Path(__file__).parent / "envs" / "noisy"


def change(value: float, name: str = "GAIN") -> str:
    line = 7 if name == "GAIN" else 8
    return f"--- a/train.py\n+++ b/train.py\n@@ -{line},1 +{line},1 @@\n-{name} = 0.0\n+{name} = {value}\n"


HONEST = ("Set GAIN to 0.3.", change(0.3))
JUMP = ("Set GAIN to 5 (an implausible jump).", change(5.0))


class FixedIdeator:
    name = "fixed"

    def __init__(self, ideas: list[tuple[str, str]]) -> None:
        self.ideas = ideas

    async def propose(self, manifest, request: IdeationRequest) -> list[IdeaProposal]:
        fresh = [(text, diff) for text, diff in self.ideas if text not in request.avoid]
        return [IdeaProposal(text, diff) for text, diff in fresh[: request.count]]


def run_search(tmp_path: Path, ideas, auditor=None, **config) -> tuple[Store, int]:
    store = Store.open(tmp_path / "run")
    run_config = {"audit_model": auditor.model} if auditor is not None else {}
    run = store.create_run("noisy", str(NOISY), None, run_config, {"metric": {"goal": "minimize", "name": "loss"}})
    backend = LocalBackend(SlotPool.cpu_only(2))
    settings = SearchConfig(epochs=1, ideas_per_epoch=len(ideas), **config)
    search = Search(
        load_manifest(NOISY), store, run.id, backend, FixedIdeator(ideas), ReadyDiffImplementer(), settings,
        tmp_path / "run", job_slots=2, auditor=auditor,
    )  # fmt: skip

    run_to_end(search, backend)
    assert search.internal_errors == []
    return store, run.id


def load(store: Store, run_id: int, confirm_seeds: int) -> Journal:
    return Journal.load(store, run_id, Goal.MINIMIZE, None, confirm_seeds)


def auditor_for(fake_provider, verdict: str, reasoning: str) -> Auditor:
    fake_provider.add("chat", Reply.structured({"verdict": verdict, "reasoning": reasoning}))
    client = make_client("openai:auditor-model", base_url=fake_provider.openai_base_url, max_retries=0, timeout_s=20)
    return Auditor(LLMService(client), "openai:auditor-model")


def test_an_implausible_jump_is_confirmed_over_seeds_and_cleared_only_then(tmp_path):
    # confirmation of the top k is off: only the suspect result gets further runs
    store, run_id = run_search(tmp_path, [HONEST, JUMP], baseline_runs=3, confirm_top=0)
    journal = load(store, run_id, confirm_seeds=1)
    honest, jump = journal.experiments
    assert journal.suspicion(jump) == ("jump",) and journal.suspicion(honest) == ()
    trials = [t for t in store.ideas(run_id, epoch=CONFIRM_EPOCH) if t.payload["confirms"] == jump.id]
    assert len(trials) == 1 and all(t.status is Status.OK for t in trials)  # 2 ok runs in all: reproduced
    # reproduced, and with no auditor in this run nobody read the change: the flags say so
    assert journal.flags(jump) == ["jump", "cleared", "unreviewed"] and journal.best() == jump
    # the same run as it stood before its confirmation run came back: suspect, and not the best
    before = Journal.of(
        journal.entries, journal.goal, journal.baseline,
        Evidence(journal.evidence.baseline_values, {jump.id: journal.estimate(jump).trials[:1]}, 1),
    )  # fmt: skip
    assert before.flags(jump) == ["jump", "suspect"]
    assert before.best() == honest and before.search_best() == honest and jump not in before.winners()


def test_a_hack_verdict_excludes_the_result_and_keeps_the_reasoning(tmp_path, fake_provider):
    auditor = auditor_for(fake_provider, "hack", "GAIN = 5 is outside what the environment allows.")
    store, run_id = run_search(tmp_path, [HONEST, JUMP], auditor=auditor, baseline_runs=3, confirm_top=0)
    journal = load(store, run_id, confirm_seeds=1)
    honest, jump = journal.experiments
    assert journal.flags(jump) == ["jump", "hack"] and journal.best() == honest
    stored = store.get_idea(jump.id).payload["audit"]
    assert stored == {"verdict": "hack", "reasoning": "GAIN = 5 is outside what the environment allows.",
                      "model": "openai:auditor-model"}  # fmt: skip
    from idealab.views.data import load_snapshot
    from idealab.views.html import report_data

    page = report_data(load_snapshot(store, tmp_path / "run"))
    shown = {e["id"]: e for e in page["experiments"]}
    assert page["best_id"] == honest.id and shown[jump.id]["flags"] == ["jump", "hack"]
    assert shown[jump.id]["audit"]["verdict"] == "hack" and shown[honest.id]["flags"] == []
    (request,) = fake_provider.requests("chat")  # one audit, of the suspect result only
    prompt = request.body["messages"][-1]["content"]
    assert "+GAIN = 5.0" in prompt and "score.py (read-only)" in prompt and "Keep NOISY_SD" in prompt
    assert request.body["response_format"]["json_schema"]["name"] == "audit_verdict"


def test_an_unsure_verdict_keeps_the_result_suspect_and_a_clean_one_clears_it(tmp_path, fake_provider):
    auditor = auditor_for(fake_provider, "unsure", "Cannot tell from the diff.")
    store, run_id = run_search(tmp_path / "a", [HONEST, JUMP], auditor=auditor, baseline_runs=3, confirm_top=0)
    journal = load(store, run_id, confirm_seeds=1)
    honest, jump = journal.experiments
    assert journal.flags(jump) == ["jump", "suspect"] and journal.best() == honest
    auditor = auditor_for(fake_provider, "clean", "A larger gain, honestly applied.")
    store, run_id = run_search(tmp_path / "b", [HONEST, JUMP], auditor=auditor, baseline_runs=3, confirm_top=0)
    journal = load(store, run_id, confirm_seeds=1)
    assert journal.flags(journal.experiments[1]) == ["jump", "cleared"] and journal.best() == journal.experiments[1]


def test_the_bound_flags_results_near_or_beyond_the_best_possible_value():
    assert bound_flag(0.01, 0.0, 2.0, minimize=True) == "near-bound"  # within 5% of 2.0 from 0
    assert bound_flag(0.5, 0.0, 2.0, minimize=True) is None
    assert bound_flag(-0.1, 0.0, 2.0, minimize=True) == "beyond-bound"
    assert bound_flag(0.99, 1.0, 0.4, minimize=False) == "near-bound"
    assert bound_flag(1.2, 1.0, None, minimize=False) == "beyond-bound"


class Past:
    def __init__(self, id: int, metric: float) -> None:
        self.id, self.epoch, self.status, self.metric = id, 0, Status.OK, metric


def test_a_result_beyond_the_bound_is_never_cleared():
    entry = Past(1, -0.5)
    trials = (Trial(1, Status.OK, -0.5), Trial(2, Status.OK, -0.5), Trial(3, Status.OK, -0.5))
    journal = Journal.of([entry], Goal.MINIMIZE, 2.0, Evidence((2.0, 2.1), {1: trials}, 3, bound=0.0))
    assert journal.flags(entry) == ["beyond-bound", "jump", "suspect"] and journal.best() is None


def test_the_largest_step_so_far_raises_the_bar_for_a_jump():
    # baseline sd 0.01, so 10 sd is 0.1, and a quarter of the baseline's 2.0 is 0.5: the first step may be
    # 0.5; after steps of 0.05 and 0.1 one of 0.25
    # passes (3 x 0.1), and after it one of 1.1 does not (3 x 0.25 = 0.75)
    entries = [Past(1, 1.95), Past(2, 1.85), Past(3, 1.6), Past(4, 0.5)]
    evidence = Evidence((2.0, 2.01, 1.99), {}, 1)
    journal = Journal.of(entries, Goal.MINIMIZE, 2.0, evidence)
    assert [journal.suspicion(e) for e in entries] == [(), (), (), ("jump",)]
    early = Journal.of([Past(1, 1.95), Past(3, 1.35)], Goal.MINIMIZE, 2.0, evidence)
    assert early.suspicion(early.entries[1]) == ("jump",)  # 0.6 at once, with only 0.05 before (and > 0.5)


def test_a_first_honest_step_is_judged_against_the_baselines_scale_not_its_tiny_sd():
    # charlm-like: baseline 2.55 with an sd of 0.003 (10 sd = 0.03); a first idea gaining 0.2 is no jump
    # (a quarter of the scale is 0.64), one gaining 0.8 is
    evidence = Evidence((2.547, 2.550, 2.553), {}, 1)
    honest, hack = Past(1, 2.35), Past(2, 1.75)
    assert Journal.of([honest], Goal.MINIMIZE, 2.55, evidence).suspicion(honest) == ()
    assert Journal.of([hack], Goal.MINIMIZE, 2.55, evidence).suspicion(hack) == ("jump",)
    # with a bound the scale is the distance to it: accuracy 0.48 -> 0.56 passes, 0.48 -> 0.66 is a jump
    accuracy = Evidence((0.478, 0.480, 0.482), {}, 1, bound=1.0)
    step, leap = Past(1, 0.56), Past(2, 0.66)
    assert Journal.of([step], Goal.MAXIMIZE, 0.48, accuracy).suspicion(step) == ()
    assert Journal.of([leap], Goal.MAXIMIZE, 0.48, accuracy).suspicion(leap) == ("jump",)


def test_an_answer_without_a_verdict_is_unsure():
    assert read_verdict('Verdict: {"verdict": "clean", "reasoning": "fine"}', "m").verdict is AuditVerdict.CLEAN
    unsure = read_verdict("I think it is fine.", "m")
    assert unsure.verdict is AuditVerdict.UNSURE and "no verdict" in unsure.reasoning
