"""End to end: `idealab run --ideator llm` as a real subprocess on tests/envs/quad, talking to the loopback
fake provider (scripted OpenAI chat answers; no network, no real key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fakeprovider import FakeProvider, Reply
from idealab.store import Store

QUAD = Path(__file__).parent / "envs" / "quad"

IDEAS = """Some thoughts first. The loss is a quadratic; both knobs are off their optimum.

[Experiment] Move X to 0.3, where the quadratic is flat in X.
[Code Changes] In train.py set X = 0.3.
[End]

[Experiment] Move Y to 1.0, where the quadratic is flat in Y.
[Code Changes] In train.py set Y = 1.0.
[End]
"""

SET_X = """Here is the change.

```diff
--- a/train.py
+++ b/train.py
@@ -6,3 +6,3 @@
\x20
-X = 0.5
+X = 0.3
 Y = 2.0
```

This moves X to its optimum."""

# Wrong line numbers and counts, a blank context line without its space, trailing spaces: needs fuzzy.
SET_Y_MALFORMED = """--- train.py
+++ train.py
@@ -20,5 +20,5 @@
 X = 0.5   
-Y = 2.0
+Y = 1.0

 time.sleep(float(os.environ.get("QUAD_SLEEP_S", "0")))
"""  # noqa: W291

CHANGE_SCORE = """--- a/score.py
+++ b/score.py
@@ -1,2 +1,2 @@
 def score(x, y):
-    return (x - 0.3) ** 2 + (y - 1.0) ** 2 + 1.0
+    return 0.0
"""


def run_idealab(tmp_path: Path, server: FakeProvider, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`idealab run` with the LLM ideator on quad; `settings` become IDEALAB_LLM_<NAME> variables."""
    pricing = tmp_path / "prices.toml"
    pricing.write_text('[openai]\n"some-model" = { input = 1.0, output = 2.0 }\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "IDEALAB_"))}
    env["IDEALAB_PRICING"] = str(pricing)
    env.update(
        {f"IDEALAB_LLM_{k.upper()}": v for k, v in {"samples": "1", "retry_base_delay_s": "0.01", **settings}.items()}
    )
    command = [
        sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--ideator", "llm",
        "--model", "openai:some-model", "--base-url", server.openai_base_url, "--workdir", str(tmp_path / "run"),
        "--epochs", "1", "--slots", "2", "--quiet", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


def open_store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "run")


def test_happy_path_ideas_diffs_results_and_llm_calls_are_stored(tmp_path, fake_provider):
    fake_provider.add("chat", Reply.error(429, "slow down", retry_after=0), Reply.answer(IDEAS, input_tokens=2000))
    fake_provider.add("chat", Reply.answer(SET_X), Reply.answer(SET_Y_MALFORMED))
    done = run_idealab(tmp_path, fake_provider, "--ideas-per-epoch", "2", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    with open_store(tmp_path) as store:
        run = store.get_run()
        assert run is not None
        ideas = store.ideas(run.id, epoch=0)
        assert [i.status.value for i in ideas] == ["ok", "ok"]
        assert ideas[0].text.startswith("[Experiment] Move X to 0.3")
        # each idea got whichever diff answered its call first: both results are there
        assert sorted(round(i.metric or 0, 6) for i in ideas) == [1.04, 2.0]
        for idea in ideas:
            rows = store.code_changes(idea.id)
            assert [r.outcome for r in rows] == ["applied"] and rows[0].diff in (SET_X, SET_Y_MALFORMED)
            assert idea.applied_diff and idea.applied_diff.startswith("--- a/train.py")
        calls = store.llm_calls(run.id)
        assert [c.role for c in calls] == ["ideator", "implementer", "implementer"]
        assert calls[0].error is None and calls[0].extra is not None
        assert calls[0].extra["attempts"] == 2  # 429, then the answer
        # asked for structured output (OpenAI's default), answered in tagged text: read by the text parser
        assert (calls[0].extra["format"], calls[0].extra["ideas"], calls[0].extra["structured"]) == ("text", 2, True)
        assert calls[0].input_tokens == 2000 and abs((calls[0].cost_usd or 0) - (2000 * 1.0 + 5 * 2.0) / 1e6) < 1e-12
        assert {c.idea_id for c in calls[1:]} == {i.id for i in ideas} and calls[0].idea_id is None
        assert all(c.output_tokens == 5 and c.cost_usd for c in calls)
    assert len(fake_provider.requests("chat")) == 4


def test_a_readonly_change_never_fixed_is_unimplementable_with_the_refusal(tmp_path, fake_provider):
    fake_provider.add("chat", Reply.answer(IDEAS), Reply.answer(CHANGE_SCORE), Reply.answer(CHANGE_SCORE))
    done = run_idealab(tmp_path, fake_provider, "--ideas-per-epoch", "1", revisions="1")
    assert done.returncode == 0, done.stderr
    with open_store(tmp_path) as store:
        run = store.get_run()
        assert run is not None
        (idea,) = store.ideas(run.id, epoch=0)
        assert idea.status.value == "unimplementable"
        assert idea.reason is not None and "score.py: this file is read-only" in idea.reason
        rows = store.code_changes(idea.id)
        assert [(r.attempt, r.outcome) for r in rows] == [(1, "rejected"), (2, "rejected")]
    revision = fake_provider.requests("chat")[2].body["messages"][-1]["content"]
    assert "read-only" in revision  # the refusal went back to the model
    assert "return 0.0" not in (QUAD / "score.py").read_text()


def test_timeouts_and_garbage_make_the_ideator_ask_again_then_the_run_goes_on(tmp_path, fake_provider):
    fake_provider.add(
        "chat",
        Reply.answer(IDEAS, delay_s=4), Reply.answer(IDEAS, delay_s=4),  # two timeouts: the call fails
        Reply.garbage(),  # an HTTP body that is no chat completion
        Reply.answer("I would rather discuss the theory of quadratics in general."),  # no idea in it
        Reply.answer(IDEAS), Reply.answer(SET_X),
    )  # fmt: skip
    done = run_idealab(tmp_path, fake_provider, "--ideas-per-epoch", "1", timeout_s="0.5", max_retries="1")
    assert done.returncode == 0, done.stderr
    with open_store(tmp_path) as store:
        run = store.get_run()
        assert run is not None
        (idea,) = store.ideas(run.id, epoch=0)
        assert idea.status.value == "ok" and abs((idea.metric or 0) - 2.0) < 1e-9
        calls = store.llm_calls(run.id)
        assert [c.role for c in calls] == ["ideator"] * 4 + ["implementer"]
        assert "timeout" in (calls[0].error or "")
        # both attempts reached the server and are billed: priced at an estimate of the prompt
        assert calls[0].extra == {"attempts": 2, "unanswered_attempts": 2, "estimated": True}
        assert calls[0].input_tokens > 0 and (calls[0].cost_usd or 0) > 0
        assert "not a valid response" in (calls[1].error or "")
        assert calls[2].error is None and "quadratics" in calls[2].response


def test_the_cost_cap_ends_the_run_cleanly_and_cancels_what_did_not_run(tmp_path, fake_provider):
    fake_provider.add("chat", Reply.answer(IDEAS, input_tokens=1_000_000))  # $1 at the test's price
    done = run_idealab(tmp_path, fake_provider, "--ideas-per-epoch", "2", "--epochs", "2", "--max-cost-usd", "0.5")
    assert done.returncode == 0, done.stderr
    assert len(fake_provider.requests("chat")) == 1  # nothing was called past the cap
    status = subprocess.run(
        [sys.executable, "-m", "idealab", "status", "--workdir", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["counts"] == {"cancelled": 2}
    assert all("budget" in (e["reason"] or "") for e in data["experiments"])
    assert data["baseline"]["mean"] is not None and abs(data["cost_usd"] - 1.0) < 1e-3


def _system(body: dict) -> str:
    return str(body["messages"][0]["content"]) if body["messages"][0]["role"] == "system" else ""


def implementing(idea: str):
    """Matches the implementer's calls for the idea whose text contains `idea`."""
    return lambda body: "research idea into" in _system(body) and idea in body["messages"][-1]["content"]


def ideating(body: dict) -> bool:
    return "You propose research ideas" in _system(body)


THREE_IDEAS = """[Experiment] Move X to 0.3 (fast).
[Code Changes] In train.py set X = 0.3.
[End]

[Experiment] Held idea Y.
[Code Changes] In train.py set X = 0.3.
[End]

[Experiment] Held idea Z.
[Code Changes] In train.py set X = 0.3.
[End]
"""

NEXT_EPOCH_IDEA = """[Experiment] Second-epoch idea W.
[Code Changes] In train.py set X = 0.31.
[End]
"""


@pytest.mark.slow
def test_next_epoch_ideation_proceeds_while_implementations_fill_their_slots(tmp_path, fake_provider):
    """Two ideas' 4 samples each (8 implementer calls, the implementer's whole limit) are held in flight; the
    next epoch's ideation must still be sent and answered, and only its answer releases them. (The first
    idea's job, 1.5 s in the slow preset, runs before the gate opens: by then all eight calls are sent.)"""
    released = threading.Event()
    fake_provider.add("chat", Reply.answer(THREE_IDEAS), Reply.answer(NEXT_EPOCH_IDEA, release=released), when=ideating)
    fake_provider.add("chat", *[Reply.answer(SET_X)] * 4, when=implementing("Move X to 0.3 (fast)"))
    for held in ("Held idea Y", "Held idea Z"):
        fake_provider.add("chat", *[Reply.answer(SET_X, hold=released)] * 4, when=implementing(held))
    done = run_idealab(
        tmp_path, fake_provider, "--epochs", "2", "--ideas-per-epoch", "3", "--next-epoch-at", "0.3",
        "--preset", "slow", samples="4", implementer_max_calls="8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert fake_provider.hold_timeouts == 0, "the held implementations were never released by an ideation answer"
    held = [r for r in fake_provider.requests("chat") if implementing("Held idea")(r.body)]
    next_epoch = [r for r in fake_provider.requests("chat") if ideating(r.body)][1]
    assert len(held) == 8 and "Move X to 0.3 (fast)" in next_epoch.body["messages"][-1]["content"]  # epoch 1
    assert next_epoch.others_in_flight >= 8  # it was sent while all eight implementer calls were held
    with open_store(tmp_path) as store:
        run = store.get_run()
        assert run is not None
        assert [i.status.value for i in store.ideas(run.id, epoch=0)] == ["ok", "ok", "ok"]
        assert any("idea W" in i.text for i in store.ideas(run.id, epoch=1))
