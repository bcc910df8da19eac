"""The ideation prompts carry the environment's research direction and the original prompts' instructions."""

from __future__ import annotations

from pathlib import Path

import pytest

from idealab.ideators import prompting
from idealab.ideators.base import IdeaKind, IdeationRequest, PastIdea
from idealab.manifest import load_manifest, resolve_env
from idealab.status import Status

QUAD = Path(__file__).parent / "envs" / "quad"


def request(kind: IdeaKind, history: list[PastIdea] | None = None, baseline: float | None = 2.04) -> IdeationRequest:
    epoch = 0 if kind is IdeaKind.INITIAL else 1
    return IdeationRequest(epoch=epoch, kind=kind, count=3, history=history or [], avoid=[], baseline=baseline, seed=0)


@pytest.mark.parametrize("env", ["grpo", "nanogpt"])
@pytest.mark.parametrize("kind", [IdeaKind.INITIAL, IdeaKind.EXPLOIT, IdeaKind.EXPLORE])
def test_every_ideation_prompt_carries_the_guidance(env: str, kind: IdeaKind) -> None:
    manifest = load_manifest(resolve_env(env))
    assert manifest.guidance is not None
    _, user = prompting.ideation_prompt(manifest, request(kind))
    assert "## Research direction for this environment" in user
    assert " ".join(manifest.guidance.direction.split()) in " ".join(user.split())
    for example in manifest.guidance.examples:
        assert f"- {example}" in user


def test_grpo_guidance_names_the_original_directions() -> None:
    guidance = load_manifest(resolve_env("grpo")).guidance
    assert guidance is not None
    text = (guidance.direction + " ".join(guidance.examples)).lower()
    for kind in ("loss", "reward", "curriculum", "sequence", "upper bound", "standard deviation"):
        assert kind in text, kind


def test_an_environment_without_guidance_gets_no_section() -> None:
    _, user = prompting.ideation_prompt(load_manifest(QUAD), request(IdeaKind.INITIAL))
    assert "Research direction" not in user and "$" not in user


def test_exploit_asks_for_the_full_experiment() -> None:
    history = [PastIdea(1, 0, "[Experiment] good", Status.OK, 1.5)]
    _, user = prompting.ideation_prompt(load_manifest(QUAD), request(IdeaKind.EXPLOIT, history))
    assert "full experiment" in user and "no context of the experiments above" in user


def test_explore_asks_for_novel_ideas_and_shows_worse_than_baseline() -> None:
    history = [
        PastIdea(1, 0, "[Experiment] better", Status.OK, 1.5),
        PastIdea(2, 0, "[Experiment] worse", Status.OK, 3.0),
        PastIdea(3, 0, "[Experiment] slow", Status.TIMEOUT, 1.9),
        PastIdea(4, 0, "[Experiment] crashed", Status.FAILED, None),
    ]
    _, user = prompting.ideation_prompt(load_manifest(QUAD), request(IdeaKind.EXPLORE, history))
    assert "not yet established" in user and "patterns that often led to bad results" in user
    assert "- [loss = 1.5, beats the baseline] [Experiment] better" in user
    assert "- [loss = 3, worse than the baseline] [Experiment] worse" in user
    assert "- [loss = 1.9, partial (stopped by the time limit), beats the baseline] [Experiment] slow" in user
    assert "[Experiment] crashed" in user and "[loss = " not in user.split("[Experiment] crashed")[0].splitlines()[-1]
