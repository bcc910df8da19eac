"""The statistics behind "beats the baseline", the labels ideators see, and the seed in the job contract."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idealab.executor.runner import job_spec
from idealab.ideators.base import IdeaKind, IdeationRequest, PastIdea
from idealab.ideators.prompting import ideation_prompt
from idealab.manifest import Goal, load_manifest
from idealab.search import stats
from idealab.search.evidence import Evidence, Trial
from idealab.search.journal import Journal, Verdict
from idealab.status import Status

NOISY = Path(__file__).parent / "envs" / "noisy"


@pytest.mark.parametrize(
    ("q", "df", "table"), [(0.975, 2, 4.303), (0.975, 4, 2.776), (0.95, 10, 1.812), (0.975, 1, 12.706)]
)
def test_t_quantiles_match_the_table(q, df, table):
    assert stats.t_quantile(q, df) == pytest.approx(table, abs=1e-3)


def test_welch_one_sided_test():
    baseline = [2.0, 2.1, 1.9]
    assert stats.welch_p([1.0, 1.1, 0.9], baseline, None, higher=False) < 0.01  # clearly lower loss
    assert stats.welch_p([2.0, 2.1, 1.95], baseline, None, higher=False) > 0.3  # the same code, really
    assert stats.welch_p([3.0, 3.1, 2.9], baseline, None, higher=True) < 0.01  # direction respected
    assert stats.welch_p([1.5], baseline, None, higher=False) is None  # one run: no test
    assert stats.welch_p([1.0, 1.0], [], 2.0, higher=False) == 0.0  # deterministic, against a given value


def past(idea_id: int, metric: float) -> PastIdea:
    return PastIdea(idea_id, 0, f"[Experiment] idea {idea_id}", Status.OK, metric)


def test_ideators_see_confirmed_means_unconfirmed_runs_and_the_noise_floor():
    baseline = (2.0, 2.1, 1.9)  # mean 2.0, sd 0.1
    trials = {
        1: tuple(Trial(s, Status.OK, m) for s, m in ((1, 1.2), (2, 1.3), (3, 1.1))),  # confirmed, a real gain
        2: (Trial(4, Status.OK, 1.85),),  # lucky-looking single run inside the noise floor
        3: tuple(Trial(s, Status.OK, m) for s, m in ((5, 1.7), (6, 2.1), (7, 2.2))),  # lucky first run
    }
    evidence = Evidence(baseline, trials, confirm_seeds=3)
    journal = Journal.of([past(1, 1.2), past(2, 1.85), past(3, 1.7)], Goal.MINIMIZE, 2.0, evidence)
    first, second, third = journal.entries
    assert journal.verdict(first) is Verdict.BEATS and journal.winners() == [first]
    assert journal.verdict(second) is Verdict.UNCONFIRMED and journal.inside_noise(second)
    assert journal.verdict(third) is not Verdict.BEATS and journal.value(third) == pytest.approx(2.0)
    assert journal.search_best() == first and journal.confirmed_best() == first
    request = IdeationRequest(1, IdeaKind.EXPLORE, 2, list(journal.entries), [], 2.0, 0, evidence=evidence)
    _, prompt = ideation_prompt(load_manifest(NOISY), request)
    assert "loss = 1.2 (mean of 3 runs, 95% CI" in prompt and "beats the baseline] [Experiment] idea 1" in prompt
    assert "loss = 1.85, unconfirmed (1 run), inside the noise floor] [Experiment] idea 2" in prompt
    assert "loss = 2 (mean of 3 runs" in prompt and "idea 3" in prompt


def test_every_job_gets_its_seed_and_a_manifest_may_name_its_own_variable_or_flag(tmp_path):
    plain = job_spec(load_manifest(NOISY), tmp_path, "j1", tmp_path / "logs", seed=17)
    assert plain.env["IDEALAB_SEED"] == "17" and plain.command == "python train.py"
    root = tmp_path / "env"
    shutil.copytree(NOISY, root)
    toml = root / "idealab.toml"
    toml.write_text(toml.read_text().replace("[run]\n", '[run]\nseed_env = "MY_SEED"\nseed_flag = "--seed"\n'))
    spec = job_spec(load_manifest(root), tmp_path, "j2", tmp_path / "logs", seed=5)
    assert spec.env["IDEALAB_SEED"] == "5" and spec.env["MY_SEED"] == "5"
    assert spec.command == "python train.py --seed 5"


def test_the_baseline_is_measured_unless_a_value_is_given_explicitly(tmp_path):
    import asyncio

    from idealab.executor.slots import SlotPool
    from idealab.ideators.mutate import MutateIdeator
    from idealab.ideators.ready import ReadyDiffImplementer
    from idealab.search.loop import Search, SearchConfig
    from idealab.store import Store
    from simbackend import SimBackend
    from test_search_loop import QUAD, quad_script

    with pytest.raises(ValueError, match="baseline_runs"):
        SearchConfig(baseline_runs=0)  # no measurement needs an explicit value
    with pytest.raises(ValueError, match="baseline_runs"):
        SearchConfig(baseline_value=2.0)  # and a value is only for an unmeasured run
    store = Store.open(tmp_path / "run")
    run = store.create_run("quad", str(QUAD), None, {}, {"metric": {"goal": "minimize", "name": "loss"}})
    config = SearchConfig(epochs=1, ideas_per_epoch=2, baseline_runs=0, baseline_value=2.5, confirm_top=0)
    search = Search(
        load_manifest(QUAD), store, run.id, SimBackend(SlotPool.cpu_only(2), quad_script()), MutateIdeator(),
        ReadyDiffImplementer(), config, tmp_path / "run",
    )  # fmt: skip
    asyncio.run(search.run())
    assert store.ideas(run.id, epoch=-1) == []
    stored = store.get_run()
    assert stored is not None and (stored.baseline_metric, stored.baseline_status) == (2.5, "given")
    assert Journal.load(store, run.id, Goal.MINIMIZE, stored.baseline_metric).baseline == 2.5
