"""What calls cost: cancelled calls billed at an estimate and counted by the cap, prompt-cache reads and
writes priced, the price library with the local file as override, an unknown price refused with a cap.
Through the real clients and the loopback fake provider."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fakeprovider import FakeProvider, Reply
from idealab.executor.sandbox import copy_environment
from idealab.ideators import registry
from idealab.ideators.base import IdeaProposal
from idealab.ideators.llm_implementer import ImplementerSettings, LLMImplementer
from idealab.llm import BudgetExhausted, CallRecord, LLMConfigError, LLMRequest, LLMService, Message, make_client
from idealab.llm.types import estimate_tokens
from idealab.manifest import load_manifest
from idealab.startup import CallLog
from idealab.store import Store

QUAD = Path(__file__).parent / "envs" / "quad"
PROMPT = LLMRequest((Message("user", "the whole codebase " * 200),), system="you implement ideas", max_tokens=100)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "IDEALAB_PRICING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    prices = tmp_path / "prices.toml"
    prices.write_text('[openai]\n"some-model" = { input = 100.0, output = 200.0 }\n')
    monkeypatch.setenv("IDEALAB_PRICING", str(prices))


def test_a_call_cancelled_in_flight_is_recorded_at_an_estimate_and_counted_by_the_cap(fake_provider):
    fake_provider.add("chat", Reply.answer("too late", delay_s=60))  # answered only after it was cancelled
    client = make_client("openai:some-model", base_url=fake_provider.openai_base_url, max_retries=0)
    records: list[CallRecord] = []

    async def go() -> None:
        service = LLMService(client, max_cost_usd=0.01, recorder=records.append, price=client.price)
        call = asyncio.create_task(service.complete(PROMPT, role="implementer", idea_id=3))
        assert await asyncio.to_thread(fake_provider.wait_for_requests, 1)  # the request was sent
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        expected = estimate_tokens(PROMPT.prompt_text()) * 100.0 / 1e6
        assert service.spent_usd == pytest.approx(expected) and expected > 0.01
        with pytest.raises(BudgetExhausted):  # the cancelled call's cost counts toward the cap
            await service.complete(PROMPT, role="implementer")

    asyncio.run(go())
    [record] = records
    assert record.cancelled and record.estimated and record.idea_id == 3 and record.response is None
    assert record.input_tokens == estimate_tokens(PROMPT.prompt_text()) and record.output_tokens == 0
    assert record.cost_usd == pytest.approx(record.input_tokens * 100.0 / 1e6)
    assert len(fake_provider.requests("chat")) == 1


def test_an_attempt_that_timed_out_is_billed_at_an_estimate_beside_the_answer_that_followed(fake_provider):
    fake_provider.add("chat", Reply.answer("slow", delay_s=60), Reply.answer("ok", input_tokens=10, output_tokens=5))
    client = make_client(
        "openai:some-model", base_url=fake_provider.openai_base_url, max_retries=1, timeout_s=0.5,
        retry_base_delay_s=0.01,
    )  # fmt: skip
    records: list[CallRecord] = []
    service = LLMService(client, recorder=records.append, price=client.price)
    response = asyncio.run(service.complete(PROMPT, role="ideator"))
    estimate = estimate_tokens(PROMPT.prompt_text())
    assert response.text == "ok" and response.unanswered_attempts == 1
    [record] = records
    assert record.estimated and record.unanswered_attempts == 1 and record.attempts == 2
    assert record.input_tokens == 10 + estimate
    assert record.cost_usd == pytest.approx((10 + estimate) * 100 / 1e6 + 5 * 200 / 1e6)
    assert service.spent_usd == pytest.approx(record.cost_usd)


def test_the_losing_samples_of_an_idea_are_recorded_as_cancelled_with_an_estimated_cost(tmp_path, fake_provider):
    """Two samples in parallel: the first acceptable change wins and the other, in flight, is cancelled."""
    set_x = "--- a/train.py\n+++ b/train.py\n@@ -7,1 +7,1 @@\n-X = 0.5\n+X = 0.3\n"
    # whichever sample asks first gets the answer, held until the other's request has arrived too
    fake_provider.add("chat", Reply.answer(set_x, after_requests=2), Reply.answer(set_x, delay_s=60))
    store = Store.open(tmp_path / "run")
    run = store.create_run("quad", QUAD, None, {}, {})
    calls = CallLog()
    calls.bind(store, run.id)
    idea = store.add_idea(run.id, 0, 0, "initial", "[Experiment] X = 0.3 [End]", "llm", {})
    manifest = load_manifest(QUAD)
    workspace = copy_environment(QUAD, tmp_path / "code")
    client = make_client("openai:some-model", base_url=fake_provider.openai_base_url, max_retries=0)
    implementer = LLMImplementer(
        LLMService(client, recorder=calls, price=client.price), ImplementerSettings(samples=2, revisions=0)
    )
    done = asyncio.run(implementer.implement(manifest, idea.id, IdeaProposal(idea.text, None, {}), workspace))
    assert done.ok
    rows = store.llm_calls(run.id)
    assert len(rows) == 2
    won, lost = sorted(rows, key=lambda r: bool((r.extra or {}).get("cancelled")))
    assert won.error is None and won.extra == {"attempts": 1}
    assert won.cost_usd == pytest.approx(10 * 100 / 1e6 + 5 * 200 / 1e6)  # the provider's usage
    assert lost.extra == {"attempts": 1, "cancelled": True, "estimated": True} and lost.error == "cancelled in flight"
    assert lost.input_tokens > 100 and lost.cost_usd == pytest.approx(lost.input_tokens * 100 / 1e6)
    assert store.total_cost(run.id) == pytest.approx((won.cost_usd or 0) + (lost.cost_usd or 0))
    store.close()


def test_anthropic_cache_reads_and_writes_are_priced_and_recorded(tmp_path, fake_provider, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key")
    fake_provider.add(
        "messages", Reply.answer("ok", input_tokens=1000, cached_tokens=600, cache_write_tokens=300, output_tokens=10)
    )
    client = make_client("anthropic:claude-sonnet-4-6", base_url=fake_provider.anthropic_base_url, max_retries=0)
    store = Store.open(tmp_path / "run")
    run = store.create_run("quad", QUAD, None, {}, {})
    calls = CallLog()
    calls.bind(store, run.id)
    request = LLMRequest((Message("user", "CODEBASE...the idea", cache_prefix=11),), system="sys", max_tokens=100)
    response = asyncio.run(LLMService(client, recorder=calls, price=client.price).complete(request, role="implementer"))
    # genai-prices' Claude Sonnet 4.6: $3 input, $0.30 cache read, $3.75 cache write, $15 output per million
    expected = (100 * 3.0 + 600 * 0.30 + 300 * 3.75 + 10 * 15.0) / 1e6
    assert (response.input_tokens, response.cached_input_tokens, response.cache_write_tokens) == (1000, 600, 300)
    assert response.cost_usd == pytest.approx(expected)
    [row] = store.llm_calls(run.id)
    assert row.cached_tokens == 600 and row.extra == {"attempts": 1, "cache_write_tokens": 300}
    assert row.cost_usd == pytest.approx(expected)
    store.close()
    [sent] = fake_provider.requests("messages")
    assert sent.body["messages"][0]["content"] == [
        {"type": "text", "text": "CODEBASE...", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "the idea"},
    ]


def test_the_implementer_marks_the_codebase_for_the_cache_and_revisions_reuse_it(tmp_path, monkeypatch):
    """Simulated provider cache: the first sample writes the codebase prefix; its revision reads it."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key")
    with FakeProvider(prompt_cache=True) as server:
        server.add("messages", Reply.answer("no diff here"), Reply.answer("still none"))
        client = make_client("anthropic:claude-sonnet-4-6", base_url=server.anthropic_base_url, max_retries=0)
        records: list[CallRecord] = []
        implementer = LLMImplementer(
            LLMService(client, recorder=records.append, price=client.price),
            ImplementerSettings(samples=1, revisions=1),
        )
        workspace = copy_environment(QUAD, tmp_path / "code")
        idea = "[Experiment] Set X to 0.3. [End]"
        done = asyncio.run(implementer.implement(load_manifest(QUAD), 1, IdeaProposal(idea, None, {}), workspace))
        first, revision = server.requests("messages")
    assert not done.ok
    marked = first.body["messages"][0]["content"][0]
    assert marked["cache_control"] == {"type": "ephemeral"} and "train.py" in marked["text"]
    assert "Set X to 0.3" not in marked["text"]  # the idea comes after the cached prefix
    assert records[0].cache_write_tokens > 0 and records[0].cached_input_tokens == 0
    assert records[1].cached_input_tokens == records[0].cache_write_tokens and records[1].cache_write_tokens == 0
    assert (records[1].cost_usd or 0) < (records[0].cost_usd or 0) * 1.5  # a longer prompt, cheaper per token


def test_an_unknown_price_with_a_cap_is_an_error_at_start_naming_the_model(monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "t-key")
    options = registry.IdeatorOptions(model="together:nobody/prices-this", max_cost_usd=5.0)
    with pytest.raises(LLMConfigError, match="no known price for together:nobody/prices-this"):
        registry.build("llm", options)
    built = registry.build("llm", registry.IdeatorOptions(model="together:nobody/prices-this"))  # no cap: fine
    assert built.settings["model"] == "together:nobody/prices-this"


def test_the_price_file_overrides_the_library_and_local_servers_are_free(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    prices = tmp_path / "override.toml"
    prices.write_text('[openai]\n"gpt-5" = { input = 2.0, output = 20.0, cached_input = 1.0 }\n')
    monkeypatch.setenv("IDEALAB_PRICING", str(prices))
    overridden = make_client("openai:gpt-5").price
    assert overridden is not None and overridden.cost(1_000_000, 0) == pytest.approx(2.0)
    monkeypatch.delenv("IDEALAB_PRICING")
    library = make_client("openai:gpt-5-2025-08-07").price  # dated name: the library resolves it
    assert library is not None and library.cost(1_000_000, 0) == pytest.approx(1.25)
    # a loopback proxy serving a model the library knows stays priced; an unknown local model is free
    proxied = make_client("openai:gpt-5", base_url="http://127.0.0.1:9/v1").price
    assert proxied is not None and proxied.cost(1_000_000, 0) == pytest.approx(1.25)
    local = make_client("openai:my-finetune", base_url="http://localhost:9/v1").price
    assert local is not None and local.cost(1_000_000, 1_000_000) == 0.0
