"""LLM clients against a real loopback server speaking the providers' wire formats (no network)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from fakeprovider import FakeProvider, Reply
from idealab.llm import (
    BudgetExhausted,
    CallRecord,
    LLMConfigError,
    LLMError,
    LLMRequest,
    LLMService,
    Message,
    load_price_table,
    make_client,
    parse_model_spec,
)

FAST = {"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.05, "timeout_s": 5.0}
HELLO = LLMRequest(
    messages=(Message("user", "propose an idea"),), system="you are a researcher", max_tokens=4000
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real keys, base URLs or keys.json leak in from the machine running the tests."""
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "DEEPSEEK_API_KEY",
        "IDEALAB_KEYS_FILE",
        "IDEALAB_PRICING",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_openai_chat_happy_path_with_usage_and_cost(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    fake_provider.add(
        "chat",
        Reply.answer(
            "idea one", input_tokens=1000, output_tokens=500, cached_tokens=200, reasoning_tokens=100
        ),
    )
    client = make_client("openai:gpt-5", base_url=fake_provider.openai_base_url, **FAST)
    response = run(client.complete(HELLO))
    assert (response.text, response.provider, response.model) == ("idea one", "openai", "gpt-5")
    assert (response.input_tokens, response.output_tokens) == (1000, 500)
    assert (response.cached_input_tokens, response.thinking_tokens) == (200, 100)
    # genai-prices' gpt-5: $1.25 input, $0.125 cached input, $10 output per million tokens
    expected = (800 * 1.25 + 200 * 0.125 + 500 * 10.0) / 1e6
    assert response.cost_usd == pytest.approx(expected)
    assert client.price is not None and client.price.source.startswith("genai-prices")
    [sent] = fake_provider.requests("chat")
    assert sent.headers["authorization"] == "Bearer sk-test-123"
    assert sent.body["model"] == "gpt-5"
    assert sent.body["messages"][0] == {"role": "system", "content": "you are a researcher"}
    assert sent.body["max_completion_tokens"] == 4000


def test_openai_responses_api_happy_path(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_provider.add(
        "responses", Reply.answer("diff here", input_tokens=50, output_tokens=70, reasoning_tokens=30)
    )
    client = make_client("openai:o3", base_url=fake_provider.openai_base_url, api="responses", **FAST)
    req = LLMRequest(messages=HELLO.messages, system="sys", max_tokens=900, reasoning_effort="low")
    response = run(client.complete(req))
    assert response.text == "diff here"
    assert (response.input_tokens, response.output_tokens, response.thinking_tokens) == (50, 70, 30)
    assert response.cost_usd is not None and response.cost_usd > 0
    [sent] = fake_provider.requests("responses")
    assert sent.body["instructions"] == "sys"
    assert sent.body["reasoning"] == {"effort": "low"}
    assert sent.body["max_output_tokens"] == 900
    assert "temperature" not in sent.body  # reasoning models take only their default


def test_anthropic_messages_with_thinking(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    fake_provider.add(
        "messages",
        Reply.answer("final answer", thinking="let me think", input_tokens=300, output_tokens=2000),
    )
    client = make_client("anthropic:claude-haiku-4-5", base_url=fake_provider.anthropic_base_url, **FAST)
    req = LLMRequest(messages=HELLO.messages, system="sys", max_tokens=8000, thinking_budget=3000)
    response = run(client.complete(req))
    assert response.text == "final answer"  # the thinking block is not part of the text
    assert (response.input_tokens, response.output_tokens) == (300, 2000)
    assert response.cost_usd == pytest.approx((300 * 1.0 + 2000 * 5.0) / 1e6)
    [sent] = fake_provider.requests("messages")
    assert "sk-ant-test" in (
        sent.headers.get("x-api-key"),
        sent.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 3000}
    assert sent.body["max_tokens"] == 8000 and sent.body["system"] == "sys"
    assert "temperature" not in sent.body


def test_anthropic_thinking_rejects_budget_not_below_max_tokens(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    client = make_client("anthropic:claude-haiku-4-5", base_url=fake_provider.anthropic_base_url, **FAST)
    with pytest.raises(LLMError, match="must exceed the thinking budget"):
        run(client.complete(LLMRequest(messages=HELLO.messages, max_tokens=2000, thinking_budget=3000)))
    assert fake_provider.requests() == []


@pytest.mark.parametrize("first", [Reply.error(429, "slow down", retry_after=0.01), Reply.error(500, "boom")])
def test_transient_error_then_success_is_retried(fake_provider: FakeProvider, first: Reply) -> None:
    fake_provider.add("chat", first, Reply.answer("ok"))
    records: list[CallRecord] = []
    client = make_client("vllm:qwen", base_url=fake_provider.openai_base_url, **FAST)
    service = LLMService(client, recorder=records.append)
    response = run(service.complete(HELLO, role="ideator", idea_id=7))
    assert response.text == "ok" and response.attempts == 2
    assert len(fake_provider.requests("chat")) == 2
    [record] = records
    assert (record.attempts, record.error, record.idea_id, record.role) == (2, None, 7, "ideator")
    assert json.loads(record.prompt)["system"] == "you are a researcher"


def test_retry_after_header_is_honoured(fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", Reply.error(429, retry_after=0.3), Reply.answer("ok"))
    client = make_client(
        "vllm:qwen", base_url=fake_provider.openai_base_url, **(FAST | {"retry_max_delay_s": 1.0})
    )
    run(client.complete(HELLO))
    first, second = fake_provider.requests("chat")
    assert second.received_at - first.received_at >= 0.3


def test_timeout_is_retried_then_fails(fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", *[Reply.answer("too late", delay_s=3.0)] * 2)
    client = make_client(
        "vllm:qwen", base_url=fake_provider.openai_base_url, max_retries=1, **(FAST | {"timeout_s": 0.3})
    )
    with pytest.raises(LLMError, match=r"gave up after 2 attempts.*timeout") as info:
        run(client.complete(HELLO))
    assert info.value.attempts == 2
    assert len(fake_provider.requests("chat")) == 2


def test_client_error_is_not_retried(fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", Reply.error(400, "bad request: unknown field"))
    client = make_client("vllm:qwen", base_url=fake_provider.openai_base_url, **FAST)
    with pytest.raises(LLMError, match="HTTP 400.*unknown field"):
        run(client.complete(HELLO))
    assert len(fake_provider.requests("chat")) == 1


@pytest.mark.parametrize("content_type", ["application/json", "text/html"])
def test_garbage_body_is_a_clear_error(fake_provider: FakeProvider, content_type: str) -> None:
    fake_provider.add("chat", Reply.garbage(b"<html>upstream proxy error</html>", content_type))
    client = make_client("vllm:qwen", base_url=fake_provider.openai_base_url, **FAST)
    with pytest.raises(LLMError, match="not a valid response.*upstream proxy error"):
        run(client.complete(HELLO))


def test_anthropic_garbage_body_is_a_clear_error(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    fake_provider.add("messages", Reply.garbage(b'{"unexpected": true}'))
    client = make_client("anthropic:claude-haiku-4-5", base_url=fake_provider.anthropic_base_url, **FAST)
    with pytest.raises(LLMError, match="not a valid response"):
        run(client.complete(HELLO))


def test_cost_cap_stops_before_calling(fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_provider.add("chat", Reply.answer("a", input_tokens=1_000_000, output_tokens=0), Reply.answer("b"))
    client = make_client("openai:gpt-5", base_url=fake_provider.openai_base_url, **FAST)
    service = LLMService(client, max_cost_usd=1.0)
    run(service.complete(HELLO, role="ideator"))
    assert service.spent_usd == pytest.approx(1.25)
    with pytest.raises(BudgetExhausted, match="budget exhausted"):
        run(service.complete(HELLO, role="ideator"))
    assert len(fake_provider.requests()) == 1 and fake_provider.pending("chat") == 1


def test_failed_call_is_recorded(fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", Reply.error(401, "invalid key"))
    records: list[CallRecord] = []
    client = make_client("vllm:qwen", base_url=fake_provider.openai_base_url, **FAST)
    with pytest.raises(LLMError):
        run(LLMService(client, recorder=records.append).complete(HELLO, role="implementer"))
    [record] = records
    assert record.response is None and record.error is not None and "HTTP 401" in record.error


def test_concurrency_limit_is_respected(fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", *[Reply.answer("x", delay_s=0.2)] * 6)
    client = make_client("vllm:qwen", base_url=fake_provider.openai_base_url, **FAST)
    service = LLMService(client, max_concurrency=2)

    async def many() -> None:
        await asyncio.gather(*(service.complete(HELLO, role="ideator") for _ in range(6)))

    run(many())
    assert len(fake_provider.requests("chat")) == 6
    assert fake_provider.max_in_flight == 2


def test_a_role_with_its_own_slots_never_queues_behind_another(fake_provider: FakeProvider) -> None:
    """Both implementer slots are held in flight; an ideator call still goes out, and its answer frees them."""
    answered = threading.Event()
    fake_provider.add("chat", *[Reply.answer("a change", hold=answered)] * 2, when=lambda b: "change" in str(b))
    fake_provider.add("chat", Reply.answer("an idea", release=answered))
    client = make_client("vllm:qwen", base_url=fake_provider.openai_base_url, **FAST)
    service = LLMService(client, max_concurrency=1, role_limits={"ideator": 1, "implementer": 2})
    change = LLMRequest((Message("user", "Write the change."),), max_tokens=16)

    async def both() -> list[str]:
        held = [asyncio.create_task(service.complete(change, role="implementer")) for _ in range(2)]
        await asyncio.sleep(0)  # one turn of the loop: both implementer calls take their slots
        idea = await service.complete(HELLO, role="ideator")
        return [idea.text] + [(await task).text for task in held]

    assert run(both()) == ["an idea", "a change", "a change"]
    assert fake_provider.hold_timeouts == 0 and fake_provider.max_in_flight == 3


def test_missing_key_fails_at_start_naming_the_variable() -> None:
    with pytest.raises(LLMConfigError, match=r"ANTHROPIC_API_KEY.*'anthropic_key'"):
        make_client("anthropic:claude-opus-4-5")
    with pytest.raises(LLMConfigError, match=r"DEEPSEEK_API_KEY.*'deepseek_api_key'"):
        make_client("deepseek:deepseek-chat")


def test_keys_json_fields_are_read(fake_provider: FakeProvider, tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(
        json.dumps({"api_key": "sk-from-file", "organization_id": "org-9", "anthropic_key": "ant-from-file"})
    )
    fake_provider.add("chat", Reply.answer("ok"))
    fake_provider.add("messages", Reply.answer("ok"))
    # a remote-looking base URL would need a key: the default ./keys.json supplies it
    run(make_client("openai:gpt-5", base_url=fake_provider.openai_base_url, **FAST).complete(HELLO))
    run(
        make_client("anthropic:claude-haiku-4-5", base_url=fake_provider.anthropic_base_url, **FAST).complete(
            HELLO
        )
    )
    (chat,) = fake_provider.requests("chat")
    (message,) = fake_provider.requests("messages")
    assert chat.headers["authorization"] == "Bearer sk-from-file"
    assert chat.headers["openai-organization"] == "org-9"
    assert "ant-from-file" in (message.headers.get("x-api-key"), message.headers.get("authorization", "")[7:])


def test_explicit_keys_file_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps({"deepseek_api_key": "from-file"}))
    monkeypatch.setenv("DEEPSEEK_API_KEY", "from-env")
    client = make_client("deepseek:deepseek-chat", keys_file=path)
    assert client.provider == "deepseek"  # built without error: the key came from the file


def test_unknown_provider_lists_valid_ones() -> None:
    with pytest.raises(LLMConfigError, match="valid providers: openai, anthropic"):
        parse_model_spec("mistral:large")
    assert parse_model_spec("ollama:qwen2.5:7b") == ("ollama", "qwen2.5:7b")


def test_a_local_server_costs_nothing(fake_provider: FakeProvider) -> None:
    fake_provider.add("chat", Reply.answer("ok", input_tokens=12, output_tokens=34))
    client = make_client("ollama:my-local-model", base_url=fake_provider.openai_base_url, **FAST)
    response = run(client.complete(HELLO))
    assert (response.input_tokens, response.output_tokens, response.cost_usd) == (12, 34, 0.0)
    [sent] = fake_provider.requests("chat")
    assert sent.body["max_tokens"] == 4000  # compatible servers get the classic field


def test_a_remote_model_nobody_prices_has_tokens_but_no_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "t-key")
    assert make_client("together:some/unheard-of-model", **FAST).price is None
    # the same unknown model behind a loopback OpenAI-compatible server is a local one: free
    assert make_client("openai:unheard-of-model", base_url="http://127.0.0.1:9/v1", **FAST).price is not None


def test_user_price_file_extends_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[ollama]\n"my-local-model" = { input = 1.0, output = 2.0 }\n')
    monkeypatch.setenv("IDEALAB_PRICING", str(prices))
    table = load_price_table()
    price = table.lookup("ollama", "my-local-model")
    assert price is not None and price.cost(1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.lookup("anthropic", "claude-sonnet-4-5-20250929") == table.lookup(
        "anthropic", "claude-sonnet-4-5"
    )


def test_gemini_through_its_openai_compatible_endpoint(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    fake_provider.add("chat", Reply.answer("ok", input_tokens=100, output_tokens=10))
    client = make_client("gemini:gemini-2.5-pro", base_url=fake_provider.openai_base_url, **FAST)
    response = run(client.complete(HELLO))
    assert response.provider == "gemini" and response.cost_usd == pytest.approx(
        (100 * 1.25 + 10 * 10.0) / 1e6
    )
    [sent] = fake_provider.requests("chat")
    assert sent.headers["authorization"] == "Bearer g-key"
