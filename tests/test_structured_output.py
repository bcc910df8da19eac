"""Structured ideation output: each provider's wire format against the loopback fake provider, the model
discovered from /models, and `idealab run` end to end with structured output on and off."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fakeprovider import FakeProvider, Reply
from idealab.ideators.idea_parser import IDEAS_TOOL, ideas_schema, parse_ideas, parse_structured
from idealab.llm import LLMConfigError, LLMRequest, Message, OutputSchema, discover_model, make_client
from idealab.store import Store
from test_llm_e2e import IDEAS, SET_X, SET_Y_MALFORMED, run_idealab

FAST = {"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.05, "timeout_s": 5.0}
IDEAS_JSON = {
    "ideas": [
        {"experiment": "Move X to 0.3, where the quadratic is flat in X.", "code_changes": "In train.py set X = 0.3."},
        {"experiment": "Move Y to 1.0, where the quadratic is flat in Y.", "code_changes": "In train.py set Y = 1.0."},
    ]
}
ASK = LLMRequest(
    (Message("user", "two ideas please"),),
    max_tokens=4000,
    output=OutputSchema(IDEAS_TOOL, "Submit the ideas.", ideas_schema(2)),
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "IDEALAB_KEYS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_the_schema_and_the_tagged_text_give_the_same_ideas() -> None:
    assert parse_structured(json.dumps(IDEAS_JSON)) == parse_ideas(IDEAS)
    assert parse_structured('{"ideas": [{"experiment": "cut sho') == []  # truncated JSON: no ideas


def test_openai_chat_sends_a_strict_json_schema_and_returns_the_json(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_provider.add("chat", Reply.structured(IDEAS_JSON))
    client = make_client("openai:gpt-4o", base_url=fake_provider.openai_base_url, **FAST)
    response = asyncio.run(client.complete(ASK))
    assert response.structured and json.loads(response.text) == IDEAS_JSON
    [sent] = fake_provider.requests("chat")
    fmt = sent.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == IDEAS_TOOL and fmt["json_schema"]["schema"] == ideas_schema(2)


def test_llamacpp_is_asked_in_the_json_object_form_its_server_knows(fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", Reply.structured(IDEAS_JSON))
    client = make_client("llamacpp:smol", base_url=fake_provider.openai_base_url, **FAST)
    assert asyncio.run(client.complete(ASK)).structured
    [sent] = fake_provider.requests("chat")
    assert sent.body["response_format"] == {"type": "json_object", "schema": ideas_schema(2)}


def test_openai_responses_api_sends_a_text_format(fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_provider.add("responses", Reply.structured(IDEAS_JSON))
    client = make_client("openai:gpt-5", base_url=fake_provider.openai_base_url, api="responses", **FAST)
    response = asyncio.run(client.complete(ASK))
    assert response.structured and json.loads(response.text) == IDEAS_JSON
    [sent] = fake_provider.requests("responses")
    assert sent.body["text"]["format"]["type"] == "json_schema"
    assert sent.body["text"]["format"]["schema"] == ideas_schema(2)


def test_anthropic_forces_the_tool_and_reads_its_input(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    fake_provider.add("messages", Reply.structured(IDEAS_JSON))
    client = make_client("anthropic:claude-x", base_url=fake_provider.anthropic_base_url, **FAST)
    response = asyncio.run(client.complete(ASK))
    assert response.structured and json.loads(response.text) == IDEAS_JSON
    assert response.stop_reason == "tool_use"
    [sent] = fake_provider.requests("messages")
    assert sent.body["tools"] == [
        {"name": IDEAS_TOOL, "description": "Submit the ideas.", "input_schema": ideas_schema(2)}
    ]
    assert sent.body["tool_choice"] == {"type": "tool", "name": IDEAS_TOOL}


def test_anthropic_with_thinking_lets_the_model_choose_and_text_stays_readable(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API refuses a forced tool with extended thinking: tool_choice is auto, and a text answer is
    returned as text (not structured) for the tagged parser."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    fake_provider.add("messages", Reply.answer(IDEAS, thinking="hmm"))
    client = make_client("anthropic:claude-x", base_url=fake_provider.anthropic_base_url, **FAST)
    thinking = LLMRequest(ASK.messages, max_tokens=4000, thinking_budget=1000, output=ASK.output)
    response = asyncio.run(client.complete(thinking))
    assert not response.structured and response.text == IDEAS
    assert fake_provider.requests("messages")[0].body["tool_choice"] == {"type": "auto"}


def test_a_local_server_names_its_model(fake_provider: FakeProvider) -> None:
    fake_provider.serve_models("SmolLM2-135M-Instruct-Q8_0.gguf")
    spec = discover_model("llamacpp:", base_url=fake_provider.openai_base_url)
    assert spec == "llamacpp:SmolLM2-135M-Instruct-Q8_0.gguf"
    assert discover_model("llamacpp:given", base_url=fake_provider.openai_base_url) == "llamacpp:given"


def test_a_server_with_several_models_must_be_told_which(fake_provider: FakeProvider) -> None:
    fake_provider.serve_models("llama3.2:1b", "qwen2.5:0.5b")
    with pytest.raises(LLMConfigError, match=r"serves 2 models \(llama3.2:1b, qwen2.5:0.5b\)"):
        discover_model("ollama:", base_url=fake_provider.openai_base_url)


def test_a_hosted_provider_is_never_asked_for_its_model() -> None:
    with pytest.raises(LLMConfigError, match="names no model"):
        discover_model("anthropic:")


# ------------------------------------------------------------------------------------------ end to end


def _ideas(tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
    with Store.open(tmp_path / "run") as store:
        run = store.get_run()
        assert run is not None
        return [(i.text, i.payload) for i in store.ideas(run.id, epoch=0)]


def _status(tmp_path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "idealab", "status", "--workdir", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_structured_ideas_run_and_are_the_same_records_as_tagged_ones(
    tmp_path: Path, fake_provider: FakeProvider
) -> None:
    (tmp_path / "json").mkdir()
    (tmp_path / "text").mkdir()
    fake_provider.add("chat", Reply.structured(IDEAS_JSON), Reply.answer(SET_X), Reply.answer(SET_Y_MALFORMED))
    done = run_idealab(tmp_path / "json", fake_provider, "--ideas-per-epoch", "2", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    fake_provider.add("chat", Reply.answer(IDEAS), Reply.answer(SET_X), Reply.answer(SET_Y_MALFORMED))
    done = run_idealab(
        tmp_path / "text", fake_provider, "--ideas-per-epoch", "2", "--batch-size", "2", structured="off"
    )
    assert done.returncode == 0, done.stderr
    assert _ideas(tmp_path / "json") == _ideas(tmp_path / "text")
    asks = [r.body for r in fake_provider.requests("chat") if "Answer format" in r.body["messages"][-1]["content"]]
    assert "response_format" in asks[0] and "response_format" not in asks[1]
    assert (
        "`submit_ideas`" in asks[0]["messages"][-1]["content"] and "[Experiment]" in asks[1]["messages"][-1]["content"]
    )
    assert _status(tmp_path / "json")["ideation"] == {
        "calls": 1, "failed_calls": 0, "answers": 1, "without_ideas": 0, "structured": 1,
    }  # fmt: skip


def test_anthropic_tool_use_ideas_run_end_to_end(tmp_path: Path, fake_provider: FakeProvider) -> None:
    fake_provider.add("messages", Reply.structured(IDEAS_JSON), Reply.answer(SET_X))
    done = run_idealab(
        tmp_path, fake_provider, "--ideas-per-epoch", "1", "--model", "anthropic:claude-x",
        "--base-url", fake_provider.anthropic_base_url, "--keys-file", str(_anthropic_keys(tmp_path)),
        thinking_budget_initial="0", implementer_thinking_budget="0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [(text, payload)] = _ideas(tmp_path)
    assert text.startswith("[Experiment] Move X to 0.3") and payload["code_changes"] == "In train.py set X = 0.3."
    assert fake_provider.requests("messages")[0].body["tool_choice"] == {"type": "tool", "name": IDEAS_TOOL}


def _anthropic_keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"anthropic_key": "sk-ant-test"}))
    return path


def test_answers_without_ideas_are_counted_and_reported_not_fatal(tmp_path: Path, fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", *[Reply.answer("I would rather talk about quadratics.")] * 4)
    done = run_idealab(tmp_path, fake_provider, "--ideas-per-epoch", "1", structured="off")
    assert done.returncode == 0, done.stderr
    assert "4 answer(s), 4 without a readable idea" in done.stdout
    assert _status(tmp_path)["ideation"]["without_ideas"] == 4


def _built(tmp_path: Path, model: str, base_url: str, *extra: tuple[str, str]) -> Any:
    from idealab.ideators.llm import build
    from idealab.ideators.registry import IdeatorOptions

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"api_key": "sk-test"}))
    options = IdeatorOptions(model=model, base_url=base_url, keys_file=keys, extra=extra)
    return build(options).ideator


def test_a_local_server_gets_a_longer_timeout_and_its_discovered_model(
    tmp_path: Path, fake_provider: FakeProvider
) -> None:
    fake_provider.serve_models("served-model")
    local = _built(tmp_path, "llamacpp:", fake_provider.openai_base_url)
    assert (local.model, local.structured, local.max_idea_chars) == ("served-model", True, 600)
    assert local.service.client.inner.timeout_s == 3600
    remote = _built(tmp_path, "openai:gpt-4o", "https://api.example.invalid/v1", ("structured", "off"))
    assert remote.service.client.inner.timeout_s == 600 and not remote.structured
    assert remote.max_idea_chars is None  # OpenAI's strict mode refuses maxLength
    given = _built(tmp_path, "openai:gpt-4o", "https://api.example.invalid/v1", ("timeout_s", "42"))
    assert given.service.client.inner.timeout_s == 42
