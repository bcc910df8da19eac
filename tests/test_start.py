"""Starting and resuming `idealab run` with an LLM, as real subprocesses against the loopback fake provider:
a start that fails leaves no run behind; a resume that would change the LLM settings is refused, naming each
difference, unless --allow-changed-settings is given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fakeprovider import FakeProvider, Reply
from idealab.store import Store

QUAD = Path(__file__).parent / "envs" / "quad"
IDEA = "[Experiment] Move X to 0.3. [Code Changes] In train.py set X = 0.3. [End]"
IDEA_2 = "[Experiment] Move Y to 1.0. [Code Changes] In train.py set Y = 1.0. [End]"
SET_X = "--- a/train.py\n+++ b/train.py\n@@ -7,1 +7,1 @@\n-X = 0.5\n+X = 0.3\n"
SET_Y = "--- a/train.py\n+++ b/train.py\n@@ -8,1 +8,1 @@\n-Y = 2.0\n+Y = 1.0\n"


def idealab(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`idealab run ARGS` on quad in tmp_path/run, with only the given IDEALAB_/OPENAI_ variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "IDEALAB_"))}
    pricing = tmp_path / "prices.toml"
    pricing.write_text('[openai]\n"some-model" = { input = 1.0, output = 2.0 }\n')
    env.update(IDEALAB_PRICING=str(pricing), IDEALAB_LLM_RETRY_BASE_DELAY_S="0.01", **variables)
    command = [
        sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--workdir", str(tmp_path / "run"),
        "--slots", "2", "--quiet", "--ideas-per-epoch", "1", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


def llm(server: FakeProvider, model: str = "openai:some-model") -> tuple[str, ...]:
    return ("--ideator", "llm", "--model", model, "--base-url", server.openai_base_url)


def test_a_missing_key_leaves_no_run_and_the_corrected_command_starts(tmp_path, fake_provider):
    done = idealab(tmp_path, "--ideator", "llm", "--model", "openai:gpt-5", "--epochs", "1")
    assert done.returncode == 2 and "OPENAI_API_KEY" in done.stderr
    assert not (tmp_path / "run" / "idealab.db").exists()
    fake_provider.add("chat", Reply.answer(IDEA), Reply.answer(SET_X))
    again = idealab(tmp_path, *llm(fake_provider), "--epochs", "1", IDEALAB_LLM_SAMPLES="1")
    assert again.returncode == 0, again.stderr
    with Store.open(tmp_path / "run") as store:
        run = store.get_run()
        assert run is not None and run.config["llm"]["model"] == "openai:some-model"


def test_a_bad_llm_option_leaves_no_run(tmp_path, fake_provider):
    done = idealab(tmp_path, *llm(fake_provider), "--llm-option", "samples=many")
    assert done.returncode == 2 and "samples" in done.stderr
    assert not (tmp_path / "run" / "idealab.db").exists()
    assert fake_provider.requests() == []


def test_an_unknown_price_with_a_cap_stops_the_start_naming_the_model(tmp_path):
    done = idealab(
        tmp_path, "--ideator", "llm", "--model", "together:nobody/prices-this", "--max-cost-usd", "5",
        TOGETHER_API_KEY="t-key",
    )  # fmt: skip
    assert done.returncode == 2 and "no known price for together:nobody/prices-this" in " ".join(done.stderr.split())
    assert not (tmp_path / "run" / "idealab.db").exists()


def test_the_resolved_llm_settings_are_stored_without_keys(tmp_path, fake_provider):
    fake_provider.add("chat", Reply.answer(IDEA), Reply.answer(SET_X))
    done = idealab(
        tmp_path, *llm(fake_provider), "--epochs", "1", "--llm-option", "revisions=1",
        IDEALAB_LLM_SAMPLES="1", OPENAI_API_KEY="sk-secret-key",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Store.open(tmp_path / "run") as store:
        run = store.get_run()
        assert run is not None
        llm_settings = run.config["llm"]
    assert llm_settings["base_url"] == fake_provider.openai_base_url
    assert llm_settings["settings"]["samples"] == 1 and llm_settings["settings"]["revisions"] == 1
    assert llm_settings["settings"]["temperature"] == 1.0  # defaults are stored too
    assert llm_settings["given"]["samples"] == "IDEALAB_LLM_SAMPLES"
    assert llm_settings["given"]["revisions"] == "--llm-option"
    assert "sk-secret-key" not in repr(run.config)


def test_a_resume_that_changes_llm_settings_is_refused_then_applied_when_allowed(tmp_path, fake_provider):
    fake_provider.add("chat", Reply.answer(IDEA), Reply.answer(SET_X))
    first = idealab(tmp_path, *llm(fake_provider), "--epochs", "1", IDEALAB_LLM_SAMPLES="1")
    assert first.returncode == 0, first.stderr

    same = idealab(tmp_path, "--epochs", "1")  # the bare resume: the stored settings apply, nothing changes
    assert same.returncode == 0, same.stderr

    changed = ("--epochs", "2", *llm(fake_provider, "openai:other-model"), "--llm-option", "revisions=1")
    refused = idealab(tmp_path, *changed, IDEALAB_LLM_SAMPLES="1", IDEALAB_LLM_TEMPERATURE="0.5")
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert "model: 'openai:some-model' when the run started, 'openai:other-model' now" in message
    assert "settings.revisions: 2 when the run started, 1 now (from --llm-option)" in message
    assert "settings.temperature: 1.0 when the run started, 0.5 now (from IDEALAB_LLM_TEMPERATURE)" in message
    assert "settings.samples" not in message and "--allow-changed-settings" in message
    assert len(fake_provider.requests()) == 2  # nothing was called for the refused resume

    fake_provider.add("chat", Reply.answer(IDEA_2), Reply.answer(SET_Y))
    allowed = idealab(
        tmp_path, *changed, "--allow-changed-settings", IDEALAB_LLM_SAMPLES="1", IDEALAB_LLM_TEMPERATURE="0.5"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "LLM settings changed" in allowed.stderr
    later = fake_provider.requests()[2:]
    assert [r.body["model"] for r in later] == ["other-model", "other-model"]
    assert all(r.body["temperature"] == 0.5 for r in later)
    with Store.open(tmp_path / "run") as store:
        run = store.get_run()
        assert run is not None
        assert run.config["llm"]["settings"]["temperature"] == 0.5 and run.config["model"] == "openai:other-model"
        [change] = run.config["llm_changes"]
        assert change["changes"]["settings.revisions"] == [2, 1]
        assert change["changes"]["model"] == ["openai:some-model", "openai:other-model"]


def test_the_cap_counts_a_cancelled_sample_and_stops_the_next_epoch(tmp_path, fake_provider):
    """Two samples of the one idea: the first change wins, the other is cancelled in flight. Its prompt
    (estimated, about 1,000 tokens at $1 per million) takes the spend past the $0.0005 cap, so the next
    epoch's ideation is never sent; the answered calls alone ($0.00004) would not have reached it."""
    fake_provider.add(
        "chat", Reply.answer(IDEA), Reply.answer(SET_X, after_requests=3), Reply.answer(SET_X, delay_s=60)
    )
    done = idealab(
        tmp_path, *llm(fake_provider), "--epochs", "2", "--max-cost-usd", "0.0005", IDEALAB_LLM_SAMPLES="2"
    )
    assert done.returncode == 0, done.stderr
    assert len(fake_provider.requests("chat")) == 3  # ideation, two samples; no ideation for epoch 1
    with Store.open(tmp_path / "run") as store:
        run = store.get_run()
        assert run is not None
        calls = store.llm_calls(run.id)
        [cancelled] = [c for c in calls if (c.extra or {}).get("cancelled")]
        assert cancelled.extra == {"attempts": 1, "cancelled": True, "estimated": True}
        assert (cancelled.cost_usd or 0) > 0.0005 and store.total_cost(run.id) > 0.0005
        assert [i.status.value for i in store.ideas(run.id, epoch=0)] == ["ok"]
