"""Anthropic's messages API through the official `anthropic` SDK, with extended thinking."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
from anthropic.types import Message as AnthropicMessage
from anthropic.types import MessageParam, TextBlockParam, ThinkingConfigParam

from idealab.llm import errors
from idealab.llm.pricing import Price
from idealab.llm.types import LLMError, LLMRequest, LLMResponse, Message, OutputSchema


class AnthropicClient:
    """One attempt per `complete` call; wrap in RetryingClient for retries."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None,
        timeout_s: float = 600.0,
        price: Price | None = None,
        provider: str = "anthropic",
    ) -> None:
        self.provider = provider
        self.model = model
        self.timeout_s = timeout_s
        self.price = price
        self._label = f"{provider}:{model}"
        # An explicit timeout also stops the SDK from refusing long non-streaming requests up front.
        self._sdk = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )

    def _thinking(self, request: LLMRequest) -> ThinkingConfigParam | anthropic.Omit:
        budget = request.thinking_budget
        if budget is None:
            return anthropic.omit
        # The API's own rules, checked here so the message is ours and no call is wasted.
        if request.temperature is not None and request.temperature != 1.0:
            raise LLMError(
                f"{self._label}: extended thinking needs temperature 1 (got {request.temperature})"
            )
        if request.max_tokens <= budget:
            raise LLMError(
                f"{self._label}: max_tokens ({request.max_tokens}) must exceed the thinking budget ({budget})"
            )
        return {"type": "enabled", "budget_tokens": budget}

    @staticmethod
    def _sampling(request: LLMRequest) -> dict[str, float] | None:
        # This SDK has no `temperature` argument; the API takes it in the body. 1 is the API's default
        # (and the only value allowed with thinking), so it is left out rather than sent.
        if request.temperature is None or request.temperature == 1.0:
            return None
        return {"temperature": request.temperature}

    @staticmethod
    def _tools(output: OutputSchema | None, thinking: bool) -> tuple[Any, Any]:
        """Structured output as one tool whose input is the answer. The call is forced, except with
        extended thinking, where the API allows only tool_choice "auto": the model is then asked (by the
        prompt) to call it, and a plain-text answer is still read by the caller's text parser."""
        if output is None:
            return anthropic.omit, anthropic.omit
        tool = {"name": output.name, "description": output.description, "input_schema": dict(output.schema)}
        choice = {"type": "auto"} if thinking else {"type": "tool", "name": output.name}
        return [tool], choice

    async def complete(self, request: LLMRequest) -> LLMResponse:
        thinking = self._thinking(request)
        tools, tool_choice = self._tools(request.output, not isinstance(thinking, anthropic.Omit))
        messages: list[MessageParam] = [_message(m) for m in request.messages]
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self._sdk.messages.create(
                    model=self.model,
                    messages=messages,
                    max_tokens=request.max_tokens,
                    system=request.system if request.system is not None else anthropic.omit,
                    thinking=thinking,
                    tools=tools,
                    tool_choice=tool_choice,
                    extra_body=self._sampling(request),
                )
        except Exception as exc:
            mapped = errors.from_sdk(anthropic, exc, self._label, self.timeout_s)
            if mapped is None:
                raise
            raise mapped from None
        return self._convert(raw, time.monotonic() - started, request.output)

    def _convert(self, raw: object, latency_s: float, output: OutputSchema | None = None) -> LLMResponse:
        if not isinstance(raw, AnthropicMessage):
            raise errors.unreadable(self._label, raw, "not a message")
        try:
            # A call of the structured-output tool is the answer: its input, as JSON text.
            calls = [b.input for b in raw.content if b.type == "tool_use" and output and b.name == output.name]
            text = (
                json.dumps(calls[0], ensure_ascii=False)
                if calls
                else "".join(block.text for block in raw.content if block.type == "text")
            )
            usage = raw.usage
            cached = usage.cache_read_input_tokens or 0
            written = usage.cache_creation_input_tokens or 0
            # input_tokens excludes cache reads and writes; ours counts every prompt token.
            total_in = usage.input_tokens + cached + written
            details = usage.output_tokens_details
            thinking_tokens = details.thinking_tokens if details is not None else 0
            return LLMResponse(
                text=text,
                model=self.model,
                provider=self.provider,
                input_tokens=total_in,
                output_tokens=usage.output_tokens,  # thinking included, as billed
                cached_input_tokens=cached,
                cache_write_tokens=written,
                thinking_tokens=thinking_tokens,
                cost_usd=self.price.cost(total_in, usage.output_tokens, cached, written) if self.price else None,
                latency_s=latency_s,
                stop_reason=raw.stop_reason,
                structured=bool(calls),
            )
        except (AttributeError, TypeError) as exc:
            raise errors.unreadable(self._label, raw.to_json(), f"missing field: {exc}") from None


def _message(message: Message) -> MessageParam:
    """A message; one whose start is a stable prefix (the codebase) gets a cache breakpoint after it, so
    the system prompt and that prefix are written to Anthropic's prompt cache once and read back (at a
    tenth of the input price) by every call that repeats them within the cache's lifetime."""
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    if message.cache_prefix <= 0:
        return {"role": "user", "content": message.content}
    blocks: list[TextBlockParam] = [
        {"type": "text", "text": message.content[: message.cache_prefix], "cache_control": {"type": "ephemeral"}}
    ]
    if message.content[message.cache_prefix :]:
        blocks.append({"type": "text", "text": message.content[message.cache_prefix :]})
    return {"role": "user", "content": blocks}
