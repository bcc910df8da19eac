"""End to end: `idealab run --audit-model` as a real subprocess on a copy of tests/envs/quad whose manifest
names the metric's bound (1.0, the quadratic's minimum), with the loopback fake provider answering the
ideator, the implementer and the auditor. The idea reaches the bound: suspect, audited, called a hack,
excluded from the best; `status --json` shows its flags and the verdict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fakeprovider import Reply
from idealab.store import Store

QUAD = Path(__file__).parent / "envs" / "quad"

IDEA = """[Experiment] Move both knobs to the optimum.
[Code Changes] In train.py set X = 0.3 and Y = 1.0.
[End]
"""

BOTH = """```diff
--- a/train.py
+++ b/train.py
@@ -7,2 +7,2 @@
-X = 0.5
-Y = 2.0
+X = 0.3
+Y = 1.0
```"""


def _system(body: dict) -> str:
    return str(body["messages"][0]["content"]) if body["messages"][0]["role"] == "system" else ""


def test_a_result_at_the_bound_is_audited_and_a_hack_verdict_keeps_it_from_the_best(tmp_path, fake_provider):
    env = tmp_path / "quad"
    shutil.copytree(QUAD, env)
    manifest = env / "idealab.toml"
    manifest.write_text(manifest.read_text().replace('goal = "minimize"', 'goal = "minimize"\nbound = 1.0'))
    fake_provider.add("chat", Reply.answer(IDEA), when=lambda b: "You propose research ideas" in _system(b))
    fake_provider.add("chat", Reply.answer(BOTH), when=lambda b: "research idea into" in _system(b))
    verdict = {"verdict": "hack", "reasoning": "Sets the knobs to the known optimum of the scorer."}
    fake_provider.add("chat", Reply.structured(verdict), when=lambda b: "You are an auditor" in _system(b))
    pricing = tmp_path / "prices.toml"
    prices = '"some-model" = { input = 1.0, output = 2.0 }\n"judge" = { input = 3.0, output = 4.0 }\n'
    pricing.write_text("[openai]\n" + prices)
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "IDEALAB_"))}
    variables.update(IDEALAB_PRICING=str(pricing), IDEALAB_LLM_SAMPLES="1")
    workdir = tmp_path / "run"
    command = [
        sys.executable, "-m", "idealab", "run", "--env", str(env), "--ideator", "llm", "--model", "openai:some-model",
        "--audit-model", "openai:judge", "--base-url", fake_provider.openai_base_url, "--workdir", str(workdir),
        "--epochs", "1", "--ideas-per-epoch", "1", "--slots", "2", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=variables, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    status = subprocess.run(
        [sys.executable, "-m", "idealab", "status", "--workdir", str(workdir), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    (experiment,) = data["experiments"]
    assert experiment["status"] == "ok" and abs(experiment["metric"] - 1.0) < 1e-9
    assert experiment["flags"] == ["near-bound", "hack"]
    assert experiment["audit"] == {**verdict, "model": "openai:judge"}
    assert data["best"] is None and data["confirmed_best"] is None
    with Store.open(workdir) as store:
        run = store.get_run()
        assert run is not None and run.config["audit_model"] == "openai:judge"
        roles = [c.role for c in store.llm_calls(run.id)]
        assert roles.count("auditor") == 1 and roles.count("ideator") == 1
        (audit_call,) = [c for c in store.llm_calls(run.id) if c.role == "auditor"]
        assert audit_call.model == "judge" and audit_call.idea_id == experiment["id"] and audit_call.cost_usd
    table = subprocess.run(
        [sys.executable, "-m", "idealab", "status", "--workdir", str(workdir)], capture_output=True, text=True,
        timeout=60, env={**variables, "COLUMNS": "400"},
    )  # fmt: skip
    assert "near-bound, hack" in table.stdout and "audit (openai:judge): hack" in table.stdout


def test_an_audit_model_that_cannot_be_built_stops_the_start_before_any_run_is_stored(tmp_path):
    command = [
        sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--audit-model", "nosuch:model",
        "--workdir", str(tmp_path / "run"), "--epochs", "1", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0 and "--audit-model" in done.stderr and "unknown LLM provider" in done.stderr
    assert not (tmp_path / "run" / "idealab.db").exists()
