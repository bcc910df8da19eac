"""The LLM implementer against real workspaces, a real preflight subprocess and the loopback fake provider."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fakeprovider import FakeProvider, Reply
from idealab.errors import StopRun
from idealab.executor.base import JobSpec, OnStart
from idealab.executor.bwrap import bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.ideators import registry
from idealab.ideators.base import IdeaKind, IdeaProposal, IdeationRequest, Implementation
from idealab.ideators.llm import LLMSettings
from idealab.ideators.llm_implementer import ImplementerSettings, LLMImplementer
from idealab.ideators.registry import IdeatorOptions
from idealab.llm import LLMService, make_client
from idealab.manifest import Manifest, load_manifest
from idealab.startup import CallLog
from idealab.store import Store

QUAD = Path(__file__).parent / "envs" / "quad"
IDEA = IdeaProposal("[Experiment] Move X to its optimum 0.3.\n[Code Changes] X = 0.3 in train.py")

SET_X = """I will change X.

```diff
--- a/train.py
+++ b/train.py
@@ -6,3 +6,3 @@
\x20
-X = 0.5
+X = 0.3
 Y = 2.0
```
That is all."""

CHANGE_SCORE = """--- a/score.py
+++ b/score.py
@@ -1,2 +1,2 @@
 def score(x, y):
-    return (x - 0.3) ** 2 + (y - 1.0) ** 2 + 1.0
+    return 0.0
"""

BREAK_AT_RUN_TIME = """train.py
<<<<<<< SEARCH
X = 0.5
=======
X = undefined_name
>>>>>>> REPLACE
"""


def env_copy(tmp_path: Path, preflight: str | None = None) -> tuple[Manifest, Path]:
    root = tmp_path / "env"
    shutil.copytree(QUAD, root)
    if preflight is not None:
        manifest = root / "idealab.toml"
        manifest.write_text(
            manifest.read_text().replace("timeout_s = 30", f"timeout_s = 30\npreflight = {preflight!r}")
        )
    manifest_obj = load_manifest(root)
    return manifest_obj, copy_environment(root, tmp_path / "workspace")


def implement(
    server: FakeProvider, manifest: Manifest, workspace: Path, cap: float | None = None, **settings: int
) -> Implementation:
    async def go() -> Implementation:
        client = make_client("openai:some-model", base_url=server.openai_base_url, max_retries=0, timeout_s=20)
        implementer = LLMImplementer(LLMService(client, max_cost_usd=cap), ImplementerSettings(**settings))
        return await implementer.implement(manifest, 7, IDEA, workspace)

    return asyncio.run(go())


def test_a_fenced_diff_with_prose_is_accepted_without_touching_the_workspace(tmp_path, fake_provider):
    manifest, workspace = env_copy(tmp_path)
    fake_provider.add("chat", Reply.answer(SET_X))
    impl = implement(fake_provider, manifest, workspace, samples=1)
    assert impl.ok and impl.reason is None
    assert [c.path for c in impl.changes] == ["train.py"] and "X = 0.3\n" in (impl.changes[0].new_text or "")
    assert impl.applied_diff is not None and "+X = 0.3" in impl.applied_diff and "That is all" not in impl.applied_diff
    assert [(a.attempt, a.sample, a.outcome) for a in impl.attempts] == [(1, 0, "applied")]
    assert "X = 0.5" in (workspace / "train.py").read_text()  # the loop writes the change, not the implementer
    prompt = fake_provider.requests("chat")[0].body["messages"][1]["content"]
    assert "Move X to its optimum 0.3." in prompt and "   7 | X = 0.5" in prompt


def test_a_readonly_change_is_refused_fed_back_and_fixed(tmp_path, fake_provider):
    manifest, workspace = env_copy(tmp_path)
    fake_provider.add("chat", Reply.answer(CHANGE_SCORE), Reply.answer(SET_X))
    impl = implement(fake_provider, manifest, workspace, samples=1, revisions=2)
    assert impl.ok
    assert [a.outcome for a in impl.attempts] == ["rejected", "applied"]
    assert "score.py: this file is read-only" in (impl.attempts[0].error or "")
    revision = fake_provider.requests("chat")[1].body["messages"]
    assert [m["role"] for m in revision] == ["system", "user", "assistant", "user"]
    assert revision[2]["content"] == CHANGE_SCORE  # the model sees its own previous answer...
    assert "read-only" in revision[3]["content"]  # ...and why it was refused


SHORTEN_SLEEP = """train.py
<<<<<<< SEARCH
X = 0.5
=======
X = 0.3
os.environ["QUAD_SLEEP_S"] = "0"
>>>>>>> REPLACE
"""


def test_a_static_refusal_goes_back_to_the_model_and_the_revision_passes(tmp_path, fake_provider):
    manifest, workspace = env_copy(tmp_path)
    fake_provider.add("chat", Reply.answer(SHORTEN_SLEEP), Reply.answer(SET_X))
    impl = implement(fake_provider, manifest, workspace, samples=1, revisions=1)
    assert impl.ok and [a.outcome for a in impl.attempts] == ["rejected", "applied"]
    error = impl.attempts[0].error or ""
    assert "reaches for the evaluation's internals" in error and "QUAD_SLEEP_S" in error and "line 8" in error
    assert "QUAD_SLEEP_S" in fake_provider.requests("chat")[1].body["messages"][3]["content"]


def test_no_acceptable_change_after_all_revisions_is_reported_with_the_last_error(tmp_path, fake_provider):
    manifest, workspace = env_copy(tmp_path)
    fake_provider.add("chat", Reply.answer(CHANGE_SCORE), Reply.answer("I cannot do that."))
    impl = implement(fake_provider, manifest, workspace, samples=1, revisions=1)
    assert not impl.ok and impl.applied_diff is None and impl.changes == ()
    assert len(impl.attempts) == 2 and all(a.outcome == "rejected" for a in impl.attempts)
    assert impl.reason is not None and "2 attempt(s)" in impl.reason and "no code change found" in impl.reason


def test_a_failing_preflight_goes_back_to_the_model(tmp_path, fake_provider):
    manifest, workspace = env_copy(tmp_path, preflight="QUAD_SLEEP_S=0 python train.py")
    fake_provider.add("chat", Reply.answer(BREAK_AT_RUN_TIME), Reply.answer(SET_X))
    impl = implement(fake_provider, manifest, workspace, samples=1, revisions=1)
    assert impl.ok and [a.fmt for a in impl.attempts] == ["search-replace", "diff"]
    error = impl.attempts[0].error or ""
    assert "preflight check `QUAD_SLEEP_S=0 python train.py` failed (exit code 1)" in error
    assert "NameError" in error  # the end of the failing run's output
    assert "NameError" in fake_provider.requests("chat")[1].body["messages"][3]["content"]


def test_parallel_samples_first_acceptable_wins_and_the_rest_are_cancelled(tmp_path, fake_provider):
    manifest, workspace = env_copy(tmp_path)
    fake_provider.add("chat", Reply.answer(SET_X), Reply.answer(SET_X, delay_s=5), Reply.answer(SET_X, delay_s=5))
    started = time.monotonic()
    impl = implement(fake_provider, manifest, workspace, samples=3)
    assert impl.ok and time.monotonic() - started < 4  # did not wait for the slow samples
    assert len(fake_provider.requests("chat")) == 3  # all three were asked at once
    assert len(impl.attempts) == 1


def test_sequential_mode_stops_on_a_failed_call_and_the_cap_stops_the_run(tmp_path, fake_provider):
    manifest, workspace = env_copy(tmp_path)
    fake_provider.add("chat", Reply.error(400, "model not found"))
    impl = implement(fake_provider, manifest, workspace, samples=1, revisions=9)
    assert not impl.ok and "the LLM call failed" in (impl.reason or "") and "model not found" in (impl.reason or "")
    with pytest.raises(StopRun, match="budget"):
        implement(fake_provider, manifest, workspace, cap=0.0, samples=2)
    assert len(fake_provider.requests("chat")) == 1  # the capped call never reached the server


# ----------------------------------------------------------------------------------- the "llm" builder


def test_settings_come_from_variables_then_pairs_and_unknown_names_are_refused():
    environ = {"IDEALAB_LLM_SAMPLES": "10", "IDEALAB_LLM_REVISIONS": "1", "OTHER": "x"}
    settings = LLMSettings.from_sources([("revisions", "3")], environ)
    assert (settings.samples, settings.revisions, settings.thinking_budget_initial) == (10, 3, 3000)
    assert settings.implementer("openai", "gpt-5").reasoning_effort == "low"
    assert settings.implementer("anthropic", "claude-x").thinking_budget == 1500
    sequential = LLMSettings(implement_mode="sequential").implementer("openai", "gpt-4o")
    assert (sequential.samples, sequential.revisions, sequential.reasoning_effort) == (1, 9, None)
    with pytest.raises(ValueError, match="valid: temperature"):
        LLMSettings.from_sources([("sample", "3")], {})
    with pytest.raises(ValueError, match="expected a int"):
        LLMSettings.from_sources([], {"IDEALAB_LLM_SAMPLES": "many"})


def test_two_models_use_their_own_endpoints_share_the_cap_and_are_recorded(tmp_path, fake_provider, monkeypatch):
    manifest, workspace = env_copy(tmp_path)
    pricing = tmp_path / "prices.toml"
    pricing.write_text('[openai]\n"some-model" = { input = 1.0, output = 1.0 }\n')
    monkeypatch.setenv("IDEALAB_PRICING", str(pricing))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_provider.anthropic_base_url)
    store = Store.open(tmp_path / "run")
    run = store.create_run("quad", manifest.root, None, {}, {})
    calls = CallLog()
    calls.bind(store, run.id)
    options = IdeatorOptions(
        model="openai:some-model", implementer_model="anthropic:claude-test",
        base_url=fake_provider.openai_base_url, max_cost_usd=1.0, extra=(("samples", "1"),), recorder=calls,
    )  # fmt: skip
    built = registry.build("llm", options)
    ideator, implementer = built.ideator, built.implementer
    idea_text = "[Experiment] Set X to 0.3. [End]"
    fake_provider.add("chat", Reply.answer(idea_text), Reply.answer(idea_text, input_tokens=1_000_000))
    fake_provider.add("messages", Reply.answer(SET_X))
    request = IdeationRequest(0, IdeaKind.INITIAL, 1, [], [], None, 0)

    async def go() -> tuple[Implementation, StopRun | None]:
        (idea,) = await ideator.propose(manifest, request)
        stored = store.add_idea(run.id, 0, 0, "initial", idea.text, "llm", {})
        impl = await implementer.implement(manifest, stored.id, idea, workspace)
        await ideator.propose(manifest, replace(request, avoid=[idea.text]))  # $1.00001: over the shared cap
        try:
            await implementer.implement(manifest, stored.id, idea, workspace)  # its own model has spent $0
        except StopRun as stop:
            return impl, stop
        return impl, None

    impl, stop = asyncio.run(go())
    assert impl.ok and stop is not None and "budget" in str(stop)
    assert [r.body["model"] for r in fake_provider.requests()] == ["some-model", "claude-test", "some-model"]
    calls = store.llm_calls(run.id)
    assert [(c.role, c.provider, c.idea_id) for c in calls] == [
        ("ideator", "openai", None),
        ("implementer", "anthropic", 1),
        ("ideator", "openai", None),
    ]
    store.close()


class RecordingBackend(LocalBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[JobSpec] = []

    async def submit(self, spec: JobSpec, on_start: OnStart | None = None) -> str:
        self.submitted.append(spec)
        return await super().submit(spec, on_start)


@pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap sandbox here: {bwrap_problem()}")
def test_the_preflight_is_a_job_of_the_runs_backend_and_cannot_see_the_workdir(tmp_path, fake_provider):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "secret.txt").write_text("the run's database and the other jobs' copies")
    manifest, workspace = env_copy(tmp_path, preflight="python peek.py")
    peek = f"import pathlib, sys\nsys.exit(pathlib.Path({str(workdir / 'secret.txt')!r}).exists())\n"
    (workspace / "peek.py").write_text(peek)  # exits 1 where it sees the workdir's file
    fake_provider.add("chat", Reply.answer(SET_X))
    backend = RecordingBackend(SlotPool.cpu_only(1), sandbox="require", conceal=[workdir])

    async def go() -> Implementation:
        client = make_client("openai:some-model", base_url=fake_provider.openai_base_url, max_retries=0, timeout_s=20)
        implementer = LLMImplementer(LLMService(client), ImplementerSettings(samples=1, revisions=0))
        implementer.use_backend(backend, workdir / "preflight")
        return await implementer.implement(manifest, 7, IDEA, workspace)

    impl = asyncio.run(go())
    assert impl.ok, impl.reason  # the preflight passed: the workdir was concealed from it
    (preflight,) = backend.submitted
    assert preflight.workspace.is_relative_to(workdir / "preflight")  # on the workdir: a cluster's nodes see it
    assert list((workdir / "preflight").iterdir()) == []  # its copy is removed afterwards


SCORED = Path(__file__).parent / "envs" / "scored"
X_AS_TEXT = """train.py
<<<<<<< SEARCH
X = 0.5
=======
X = "0.5"
>>>>>>> REPLACE
"""
SET_SCORED_X = """train.py
<<<<<<< SEARCH
X = 0.5
=======
X = 0.3
>>>>>>> REPLACE
"""


def test_a_preflight_runs_the_scoring_step_and_its_verdict_goes_back_to_the_model(
    tmp_path: Path, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With [score], the preflight trains (its own short command), then runs the real scorer in a fresh
    scoring directory: a change the scorer refuses goes back with the scorer's reason before any real job."""
    from idealab.executor.runner import copy_omits
    from idealab.paths import DATA_DIR_VAR

    data = tmp_path / "data"
    (data / "scored").mkdir(parents=True)
    (data / "scored" / "val.txt").write_text("0.3\n")
    monkeypatch.setenv(DATA_DIR_VAR, str(data))
    root = tmp_path / "env"
    shutil.copytree(SCORED, root)
    toml = root / "idealab.toml"
    text = toml.read_text().replace("timeout_s = 60\n", 'timeout_s = 60\npreflight = "python train.py"\n', 1)
    toml.write_text(
        text.replace(
            'command = "python score.py"\n', 'command = "python score.py"\npreflight_command = "python score.py"\n', 1
        )
    )
    manifest = load_manifest(root)
    workspace = copy_environment(root, tmp_path / "workspace", omit=copy_omits(manifest))
    assert not (workspace / "score.py").exists()  # the implementer's copy has no scorer: the preflight brings it
    fake_provider.add("chat", Reply.answer(X_AS_TEXT), Reply.answer(SET_SCORED_X))
    impl = implement(fake_provider, manifest, workspace, samples=1, revisions=1)
    assert impl.ok, impl.reason
    error = impl.attempts[0].error or ""
    # training passed; the scorer failed on its artefact, and says why in its own words
    assert "its scoring (`python score.py`) did not accept the result (failed)" in error, error
    assert "TypeError: unsupported operand" in error
    assert "TypeError: unsupported operand" in fake_provider.requests("chat")[1].body["messages"][3]["content"]
