"""OpenAI, and every OpenAI-compatible server (DeepSeek, Together, OpenRouter, Gemini's OpenAI endpoint,
vLLM, Ollama, llama.cpp), through the official `openai` SDK: chat completions or the responses API."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal, cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.responses import EasyInputMessageParam, Response
from openai.types.shared import ReasoningEffort

from idealab.llm import errors
from idealab.llm.pricing import Price
from idealab.llm.types import LLMError, LLMRequest, LLMResponse, OutputSchema, SchemaStyle

OpenAIApi = Literal["chat", "responses"]
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


class OpenAIClient:
    """One attempt per `complete` call; wrap in RetryingClient for retries."""

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        api_key: str,
        base_url: str | None,
        organization: str | None = None,
        timeout_s: float = 600.0,
        api: OpenAIApi = "chat",
        price: Price | None = None,
        legacy_max_tokens: bool = False,  # send `max_tokens` (older OpenAI-compatible servers)
        schema_style: SchemaStyle = "json_schema",
    ) -> None:
        self.provider = provider
        self.model = model
        self.api = api
        self.timeout_s = timeout_s
        self.price = price
        self.legacy_max_tokens = legacy_max_tokens
        self.schema_style = schema_style
        self._label = f"{provider}:{model}"
        self._sdk = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, organization=organization, timeout=timeout_s, max_retries=0
        )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        effort = _effort(request.reasoning_effort, self._label)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.api == "chat":
                    chat = await self._chat(request, effort)
                    return self._from_chat(chat, time.monotonic() - started, request.output is not None)
                answer = await self._responses(request, effort)
                return self._from_responses(answer, time.monotonic() - started, request.output is not None)
        except Exception as exc:
            mapped = errors.from_sdk(openai, exc, self._label, self.timeout_s)
            if mapped is None:
                raise
            raise mapped from None

    def _temperature(self, request: LLMRequest, effort: ReasoningEffort | None) -> float | openai.Omit:
        # Reasoning models accept only their default temperature (1): leave it out rather than send it.
        if request.temperature is None or (effort is not None and request.temperature == 1.0):
            return openai.omit
        return request.temperature

    async def _chat(self, request: LLMRequest, effort: ReasoningEffort | None) -> object:
        messages: list[ChatCompletionMessageParam] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        for m in request.messages:
            if m.role == "user":
                messages.append({"role": "user", "content": m.content})
            else:
                messages.append({"role": "assistant", "content": m.content})
        limit = request.max_tokens
        return await self._sdk.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=limit if self.legacy_max_tokens else openai.omit,
            max_completion_tokens=openai.omit if self.legacy_max_tokens else limit,
            temperature=self._temperature(request, effort),
            reasoning_effort=effort if effort is not None else openai.omit,
            response_format=self._response_format(request.output),
        )

    def _response_format(self, output: OutputSchema | None) -> Any:
        if output is None:
            return openai.omit
        if self.schema_style == "json_object":
            return {"type": "json_object", "schema": dict(output.schema)}
        # strict: the server must follow the schema exactly (OpenAI needs every key required and no extras)
        spec = {"name": output.name, "description": output.description, "schema": dict(output.schema)}
        return {"type": "json_schema", "json_schema": {**spec, "strict": True}}

    async def _responses(self, request: LLMRequest, effort: ReasoningEffort | None) -> object:
        items: list[EasyInputMessageParam] = [
            {"role": m.role, "content": m.content} for m in request.messages
        ]
        return await self._sdk.responses.create(
            model=self.model,
            input=cast(list[object], items),  # type: ignore[arg-type]  # a list of easy input messages
            instructions=request.system if request.system is not None else openai.omit,
            max_output_tokens=request.max_tokens,
            temperature=self._temperature(request, effort),
            reasoning={"effort": effort} if effort is not None else openai.omit,
            text=_text_format(request.output),
            store=False,
        )

    def _cost(self, input_tokens: int, output_tokens: int, cached: int) -> float | None:
        return self.price.cost(input_tokens, output_tokens, cached) if self.price else None

    def _response(
        self,
        text: str,
        latency_s: float,
        stop: str | None,
        tokens: tuple[int, int, int, int] | None,
        structured: bool = False,
    ) -> LLMResponse:
        """tokens: (input, output, cached input, reasoning), or None when the server sent no usage
        (some local servers leave it out: tokens unknown, so cost unknown)."""
        inp, out, cached, thinking = tokens or (0, 0, 0, 0)
        return LLMResponse(
            text=text,
            model=self.model,
            provider=self.provider,
            input_tokens=inp,
            output_tokens=out,
            cached_input_tokens=cached,
            thinking_tokens=thinking,
            cost_usd=self._cost(inp, out, cached) if tokens is not None else None,
            latency_s=latency_s,
            stop_reason=stop,
            structured=structured,
        )

    def _from_chat(self, raw: object, latency_s: float, structured: bool = False) -> LLMResponse:
        if not isinstance(raw, ChatCompletion):
            raise errors.unreadable(self._label, raw, "not a chat completion")
        try:
            choice = raw.choices[0]
            usage = raw.usage
            tokens = None
            if usage is not None:
                cached = (usage.prompt_tokens_details.cached_tokens or 0) if usage.prompt_tokens_details else 0
                details = usage.completion_tokens_details
                thinking = (details.reasoning_tokens or 0) if details else 0
                tokens = (usage.prompt_tokens, usage.completion_tokens, cached, thinking)
            text = choice.message.content or ""
            return self._response(text, latency_s, choice.finish_reason, tokens, structured)
        except (AttributeError, IndexError, TypeError) as exc:
            raise errors.unreadable(self._label, raw.to_json(), f"missing field: {exc}") from None

    def _from_responses(self, raw: object, latency_s: float, structured: bool = False) -> LLMResponse:
        if not isinstance(raw, Response):
            raise errors.unreadable(self._label, raw, "not a responses-API response")
        try:
            stop = raw.incomplete_details.reason if raw.incomplete_details else raw.status
            usage = raw.usage
            tokens = None
            if usage is not None:
                cached = usage.input_tokens_details.cached_tokens if usage.input_tokens_details else 0
                thinking = usage.output_tokens_details.reasoning_tokens if usage.output_tokens_details else 0
                tokens = (usage.input_tokens, usage.output_tokens, cached, thinking)
            return self._response(raw.output_text, latency_s, stop, tokens, structured)
        except (AttributeError, IndexError, TypeError) as exc:
            raise errors.unreadable(self._label, raw.to_json(), f"missing field: {exc}") from None


def _text_format(output: OutputSchema | None) -> Any:
    """The responses API's structured output: `text.format` of type json_schema."""
    if output is None:
        return openai.omit
    return {
        "format": {
            "type": "json_schema",
            "name": output.name,
            "description": output.description,
            "schema": dict(output.schema),
            "strict": True,
        }
    }


def _effort(value: str | None, label: str) -> ReasoningEffort | None:
    if value is None:
        return None
    if value not in REASONING_EFFORTS:
        raise LLMError(f"{label}: reasoning_effort {value!r} is not one of {', '.join(REASONING_EFFORTS)}")
    return cast(ReasoningEffort, value)
