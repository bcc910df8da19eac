"""The mutate ideator: knob changes as real diffs that apply and change the knob, inside the ranges."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from idealab.ideators import knobs as kn
from idealab.ideators.base import IdeaKind, IdeationRequest, PastIdea
from idealab.ideators.mutate import MutateIdeator
from idealab.manifest import load_manifest, resolve_env
from idealab.patching import apply_edit, write_changes
from idealab.status import Status

QUAD = Path(__file__).parent / "envs" / "quad"


def request(kind=IdeaKind.EXPLORE, count=8, history=(), seed=0):
    return IdeationRequest(0, kind, count, list(history), [], None, seed)


@pytest.mark.parametrize("env", [str(QUAD), "charlm"])
def test_mutate_diffs_apply_and_change_the_knob(tmp_path, env):
    manifest = load_manifest(resolve_env(env))
    proposals = asyncio.run(MutateIdeator().propose(manifest, request(count=10)))
    assert len(proposals) == 10
    for i, proposal in enumerate(proposals):
        workspace = tmp_path / f"w{i}"
        shutil.copytree(manifest.root, workspace)
        result = apply_edit(workspace, proposal.diff)
        assert result.ok, result.error
        write_changes(workspace, result.changes)
        texts = kn.knob_files(manifest, workspace)
        values = kn.read_values(manifest, texts)
        for name, value in proposal.payload["knobs"].items():
            knob = manifest.knobs[name]
            assert values[name] == pytest.approx(float(kn.format_value(knob, value)))
            assert knob.low <= values[name] <= knob.high
        assert proposal.text.startswith("Change ")


def test_same_seed_same_ideas():
    manifest = load_manifest(QUAD)
    a = asyncio.run(MutateIdeator().propose(manifest, request(seed=5)))
    b = asyncio.run(MutateIdeator().propose(manifest, request(seed=5)))
    c = asyncio.run(MutateIdeator().propose(manifest, request(seed=6)))
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in a] != [p.text for p in c]


def test_exploit_starts_from_winners():
    manifest = load_manifest(QUAD)
    winner = PastIdea(7, 0, "w", Status.OK, 1.01, {"knobs": {"X": 0.31, "Y": 1.05}})
    loser = PastIdea(8, 0, "l", Status.FAILED, None, {"knobs": {"X": -1.9}})
    proposals = asyncio.run(MutateIdeator().propose(manifest, request(IdeaKind.EXPLOIT, 6, [winner, loser])))
    for p in proposals:
        assert p.payload["parents"] == [7]
        config = {"X": 0.5, "Y": 2.0, **p.payload["knobs"]}
        # one knob perturbed from the winner's configuration, the other kept
        assert config["X"] == pytest.approx(0.31) or config["Y"] == pytest.approx(1.05)


def test_knob_assignment_must_exist_once(tmp_path):
    env = tmp_path / "env"
    shutil.copytree(QUAD, env)
    (env / "train.py").write_text((env / "train.py").read_text() + "\nX = 3\n")
    manifest = load_manifest(env)
    with pytest.raises(kn.KnobError, match="2 module-level assignment"):
        kn.read_values(manifest)


def test_set_values_keeps_comments_and_other_lines():
    manifest = load_manifest(resolve_env("charlm"))
    texts = kn.knob_files(manifest)
    new = kn.set_values(manifest, texts, {"LEARNING_RATE": 0.001})
    old_lines, new_lines = texts["train.py"].splitlines(), new["train.py"].splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1].startswith("LEARNING_RATE = 0.001")
    assert changed[0][0].split("#")[1:] == changed[0][1].split("#")[1:]


GRID_TOML = """name = "grid"
description = "Two integer knobs: 4 x 3 configurations, the baseline's among them."
[run]
command = "python train.py"
timeout_s = 30
[metric]
name = "loss"
goal = "minimize"
[files]
editable = ["train.py"]
[knobs.A]
file = "train.py"
low = 0
high = 3
integer = true
[knobs.B]
file = "train.py"
low = 0
high = 2
integer = true
"""
GRID_TRAIN = 'A = 1\nB = 1\nprint("@metric " + \'{"name": "loss", "value": %d}\' % ((A - 2) ** 2 + B))\n'


def test_a_run_never_proposes_a_configuration_twice(tmp_path):
    """15 ideas asked of a space with 11 configurations besides the baseline: 11 distinct ones, no repeat."""
    env = tmp_path / "grid"
    env.mkdir()
    (env / "idealab.toml").write_text(GRID_TOML)
    (env / "train.py").write_text(GRID_TRAIN)
    workdir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "idealab", "run", "--env", str(env), "--epochs", "3", "--ideas-per-epoch", "5",
         "--batch-size", "2", "--slots", "2", "--workdir", str(workdir), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(workdir / "idealab.db") as conn:
        payloads = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM ideas WHERE epoch >= 0")]
    configs = [tuple(sorted({"A": 1, "B": 1, **p["knobs"]}.items())) for p in payloads]
    assert len(configs) == len(set(configs)) == 11
    assert (("A", 1), ("B", 1)) not in configs  # the baseline is not an idea
