"""Gemini through the `google-genai` SDK (the optional extra `idealab[gemini]`).

Without that package, `make_client("gemini:...")` uses Gemini's OpenAI-compatible endpoint instead;
this module is imported only when the package is present.
"""

from __future__ import annotations

import asyncio
import importlib
import time

from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from idealab.llm import errors
from idealab.llm.pricing import Price
from idealab.llm.types import LLMRequest, LLMResponse


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP libraries' connection errors; google-genai runs on httpx or httpx2, whichever is there."""
    found: list[type[Exception]] = []
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue  # that library is absent: its errors cannot occur
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()


class GeminiClient:
    """One attempt per `complete` call; wrap in RetryingClient for retries."""

    def __init__(
        self, *, model: str, api_key: str, timeout_s: float = 600.0, price: Price | None = None
    ) -> None:
        self.provider = "gemini"
        self.model = model
        self.timeout_s = timeout_s
        self.price = price
        self._label = f"gemini:{model}"
        retry_off = genai_types.HttpRetryOptions(attempts=1)  # we retry ourselves
        options = genai_types.HttpOptions(timeout=int(timeout_s * 1000), retry_options=retry_off)
        self._sdk = genai.Client(api_key=api_key, http_options=options)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        contents = [
            genai_types.Content(
                role="user" if m.role == "user" else "model", parts=[genai_types.Part(text=m.content)]
            )
            for m in request.messages
        ]
        thinking = (
            genai_types.ThinkingConfig(thinking_budget=request.thinking_budget)
            if request.thinking_budget is not None
            else None
        )
        config = genai_types.GenerateContentConfig(
            system_instruction=request.system,
            max_output_tokens=request.max_tokens,
            temperature=request.temperature,
            thinking_config=thinking,
        )
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self._sdk.aio.models.generate_content(
                    model=self.model, contents=contents, config=config
                )
        except TimeoutError:
            raise errors.timeout_error(self._label, self.timeout_s) from None
        except genai_errors.APIError as exc:
            raise errors.status_error(self._label, exc.code, exc.message or str(exc), {}) from None
        except _TRANSPORT_ERRORS as exc:
            raise errors.connection_error(self._label, exc) from None
        latency = time.monotonic() - started
        usage = raw.usage_metadata
        prompt = (usage.prompt_token_count or 0) if usage else 0
        thoughts = (usage.thoughts_token_count or 0) if usage else 0
        output = ((usage.candidates_token_count or 0) if usage else 0) + thoughts  # thoughts bill as output
        cached = (usage.cached_content_token_count or 0) if usage else 0
        finish = raw.candidates[0].finish_reason if raw.candidates else None
        return LLMResponse(
            text=raw.text or "",
            model=self.model,
            provider=self.provider,
            input_tokens=prompt,
            output_tokens=output,
            cached_input_tokens=cached,
            thinking_tokens=thoughts,
            cost_usd=self.price.cost(prompt, output, cached) if self.price and usage else None,
            latency_s=latency,
            stop_reason=str(finish.value) if finish is not None else None,
        )
