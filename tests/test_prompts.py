"""The prompt templates and what the LLM ideator sends (through the loopback fake provider)."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from fakeprovider import FakeProvider, Reply
from idealab.errors import StopRun
from idealab.ideators import prompting
from idealab.ideators.base import IdeaKind, IdeationRequest, PastIdea
from idealab.ideators.llm import LLMIdeator, LLMSettings
from idealab.llm import LLMService, make_client
from idealab.manifest import Manifest, load_manifest
from idealab.status import TERMINAL, Status

QUAD = Path(__file__).parent / "envs" / "quad"
HIDDEN_MARKER = "HIDDEN_EVALUATION_SECRET_42"


@pytest.fixture
def env(tmp_path: Path) -> Manifest:
    """quad plus a hidden evaluation file and an environment rule."""
    root = tmp_path / "quad"
    shutil.copytree(QUAD, root)
    (root / "evaluate.py").write_text(f"# {HIDDEN_MARKER}\n")
    manifest = root / "idealab.toml"
    text = manifest.read_text().replace('readonly = ["score.py"]', 'readonly = ["score.py"]\nhidden = ["evaluate.py"]')
    manifest.write_text('rules = ["Keep QUAD_SLEEP_S as it is."]\n' + text)
    return load_manifest(root)


def request(
    kind: IdeaKind, history: list[PastIdea] | None = None, avoid: list[str] | None = None, beat_baseline: bool = False
) -> IdeationRequest:
    return IdeationRequest(
        epoch=0 if kind is IdeaKind.INITIAL else 1, kind=kind, count=3, history=history or [],
        avoid=avoid or [], baseline=2.04, seed=0, **({"history_beat_baseline": True} if beat_baseline else {}),
    )  # fmt: skip


def test_every_template_file_is_known_and_renders():
    files = {
        p.relative_to(prompting.PROMPTS_DIR).with_suffix("").as_posix() for p in prompting.PROMPTS_DIR.rglob("*.md")
    }
    assert files == set(prompting.ROLES) | {f"fragments/{f}" for f in prompting.FRAGMENTS}
    for name in files:
        template = prompting.template(name)
        values = {key: f"<{key}>" for key in template.get_identifiers()}
        text = prompting.render(name, values)
        assert text.strip() and "$" not in text, name
        assert all(f"<{key}>" in text for key in values), name


def test_every_role_prompt_renders_for_a_real_environment(env: Manifest):
    past = [PastIdea(1, 0, "[Experiment] a", Status.OK, 1.5)]
    for kind in (IdeaKind.INITIAL, IdeaKind.EXPLOIT, IdeaKind.EXPLORE):
        system, user = prompting.ideation_prompt(env, request(kind, past))
        assert system and "$" not in user and "Give exactly 3 ideas" in user and "[Experiment]" in user
    system, user = prompting.implement_prompt(env, env.root, "[Experiment] Set X to 0.3.")
    assert system and "Set X to 0.3." in user and "<<<<<<< SEARCH" in user and "--- a/" in user
    assert "hunk failed" in prompting.revise_prompt("hunk failed")


def test_files_are_shown_with_line_numbers_and_hidden_files_never(env: Manifest):
    _, user = prompting.ideation_prompt(env, request(IdeaKind.INITIAL))
    assert "### train.py (editable)" in user and "### score.py (read-only)" in user
    assert "   7 | X = 0.5" in user and "   2 |     return (x - 0.3) ** 2" in user
    assert HIDDEN_MARKER not in user and "evaluate.py" not in user
    assert "hidden from you" in user  # the rule about hidden files, without naming them
    assert "- Keep QUAD_SLEEP_S as it is." in user  # the environment's own rule
    assert "Never change the evaluation" in user and "external packages" in user  # shared rules
    assert "(lower is better)" in user and "scores 2.04" in user


def test_exploit_shows_winners_best_first(env: Manifest):
    history = [PastIdea(1, 0, "[Experiment] good", Status.OK, 1.5), PastIdea(2, 0, "[Experiment] best", Status.OK, 1.1)]
    _, exploit = prompting.ideation_prompt(env, request(IdeaKind.EXPLOIT, history, beat_baseline=True))
    best = exploit.index("[loss = 1.1, beats the baseline] [Experiment] best")
    assert best < exploit.index("[loss = 1.5, beats the baseline] [Experiment] good")
    _, explore = prompting.ideation_prompt(env, request(IdeaKind.EXPLORE, history))
    assert "brand-new" in explore and "brand-new" not in exploit


def test_exploit_prompt_with_winners_says_they_beat_the_baseline(env: Manifest):
    history = [PastIdea(1, 0, "[Experiment] good", Status.OK, 1.5)]
    _, user = prompting.ideation_prompt(env, request(IdeaKind.EXPLOIT, history, beat_baseline=True))
    assert "## Ideas that beat the baseline" in user and "and beat the baseline (loss, lower is better" in user
    assert "none beat" not in user.lower()


def test_exploit_prompt_without_winners_says_best_so_far_none_beat_the_baseline(env: Manifest):
    history = [
        PastIdea(1, 0, "[Experiment] close", Status.OK, 2.1),
        PastIdea(2, 0, "[Experiment] tie", Status.OK, 2.04),
    ]
    _, user = prompting.ideation_prompt(env, request(IdeaKind.EXPLOIT, history, beat_baseline=False))
    assert "## The best ideas so far (none beat the baseline)" in user
    assert "No idea has beaten the baseline yet" in user
    assert "Ideas that beat the baseline" not in user and "and beat the baseline" not in user
    assert "[loss = 2.04, equal to the baseline] [Experiment] tie" in user
    assert "[loss = 2.1, worse than the baseline] [Experiment] close" in user


def test_exploit_prompt_with_an_unknown_baseline_claims_no_win(env: Manifest):
    history = [PastIdea(1, 0, "[Experiment] scored", Status.OK, 2.1)]
    unknown = replace(request(IdeaKind.EXPLOIT, history), baseline=None)
    _, user = prompting.ideation_prompt(env, unknown)
    assert "The baseline's score is unknown, so no idea is known to beat it" in user
    assert "[loss = 2.1] [Experiment] scored" in user and "beat the baseline" not in user


@pytest.mark.parametrize(
    ("status", "metric", "label"),
    [
        (Status.OK, 1.5, "loss = 1.5, beats the baseline"),
        (Status.OK, 2.5, "loss = 2.5, worse than the baseline"),
        (Status.OK, 2.04, "loss = 2.04, equal to the baseline"),
        (Status.UNIMPLEMENTABLE, None, "could not be implemented"),
        (Status.FAILED, None, "ran and crashed"),
        (Status.TIMEOUT, None, "ran and timed out (exceeded the time limit)"),
        (Status.INVALID, None, "ran, but its metric was invalid or suspect"),
        (Status.TAMPERED, None, "rejected as suspect: the run changed a protected file"),
        (Status.CANCELLED, None, "not run (the search stopped first)"),
    ],
)
def test_every_status_is_labelled_exactly_for_the_ideator(env: Manifest, status: Status, metric, label: str):
    history = [PastIdea(1, 0, "[Experiment] the idea", status, metric)]
    _, explore = prompting.ideation_prompt(env, request(IdeaKind.EXPLORE, history))
    assert f"- [{label}] [Experiment] the idea" in explore


def test_every_terminal_status_has_its_own_label():
    unscored = sorted(s for s in TERMINAL if s is not Status.OK)
    assert sorted(prompting.STATUS_LABELS) == unscored
    assert len(set(prompting.STATUS_LABELS.values())) == len(unscored)


def test_the_avoid_list_is_shown_only_when_there_is_one(env: Manifest):
    _, with_avoid = prompting.ideation_prompt(env, request(IdeaKind.INITIAL, avoid=["[Experiment] seen it"]))
    assert "Already proposed" in with_avoid and "1. [Experiment] seen it" in with_avoid
    _, without = prompting.ideation_prompt(env, request(IdeaKind.INITIAL))
    assert "Already proposed" not in without


# ----------------------------------------------------------------------------- what the ideator sends


def ideator(spec: str, server: FakeProvider, cap: float | None = None) -> LLMIdeator:
    provider, model = spec.split(":", 1)
    base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
    client = make_client(spec, base_url=base, max_retries=0, timeout_s=10)
    return LLMIdeator(LLMService(client, max_cost_usd=cap), provider, model, LLMSettings())


def test_anthropic_thinking_budget_is_3000_at_epoch_0_then_1500(env, fake_provider, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key")
    answer = "[Experiment] Set X to 0.3. [Code Changes] X = 0.3 [End]"
    fake_provider.add("messages", Reply.answer(answer, thinking="hmm"), Reply.answer(answer))
    llm = ideator("anthropic:claude-test", fake_provider)

    async def two_epochs():  # one event loop: the client's connections belong to it
        return await llm.propose(env, request(IdeaKind.INITIAL)), await llm.propose(env, request(IdeaKind.EXPLORE))

    first, later = asyncio.run(two_epochs())
    assert [p.text for p in first] == ["[Experiment] Set X to 0.3.\n[Code Changes] X = 0.3"]
    assert first[0].payload == {"experiment": "Set X to 0.3.", "code_changes": "X = 0.3"}
    bodies = [r.body for r in fake_provider.requests("messages")]
    assert [b["thinking"]["budget_tokens"] for b in bodies] == [3000, 1500]
    assert all(b["max_tokens"] == 10000 for b in bodies)
    assert len(later) == 1


def test_openai_ideator_drops_repeats_and_sends_the_avoid_list(env, fake_provider):
    fake_provider.add(
        "chat", Reply.answer("[Experiment] Old idea. [End]\n[Experiment] New idea. [End]\n[Experiment] New idea. [End]")
    )
    llm = ideator("openai:some-model", fake_provider)
    got = asyncio.run(llm.propose(env, request(IdeaKind.INITIAL, avoid=["[Experiment] Old idea."])))
    assert [p.text for p in got] == ["[Experiment] New idea."]
    body = fake_provider.requests("chat")[0].body
    assert body["messages"][0]["role"] == "system"
    assert "1. [Experiment] Old idea." in body["messages"][1]["content"]
    assert "reasoning_effort" not in body  # not a reasoning model: no effort sent
    assert json.dumps(body).count(HIDDEN_MARKER) == 0


def test_a_failed_call_gives_no_ideas_and_an_exhausted_budget_stops_the_run(env, fake_provider):
    fake_provider.add("chat", Reply.error(400, "bad request"))
    llm = ideator("openai:gpt-4o-mini", fake_provider, cap=0.0)
    with pytest.raises(StopRun, match="budget"):
        asyncio.run(llm.propose(env, request(IdeaKind.INITIAL)))
    assert fake_provider.requests("chat") == []  # the cap is checked before any call
    llm = ideator("openai:gpt-4o-mini", fake_provider)
    assert asyncio.run(llm.propose(env, request(IdeaKind.INITIAL))) == []
