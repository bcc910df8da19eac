"""The provider-neutral LLM interface: requests, responses, call records and errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str
    # The first `cache_prefix` characters of `content` are the same in many calls (the codebase): a provider
    # with explicit prompt caching (Anthropic) gets a cache breakpoint there. 0: no breakpoint.
    cache_prefix: int = 0


# How an OpenAI-compatible server is asked for JSON that follows a schema: OpenAI's `json_schema` (OpenAI,
# vLLM, Ollama, llama.cpp's llama-server), or `json_object` with a `schema` key (llama-cpp-python's server
# knows only this; llama-server accepts it too).
SchemaStyle = Literal["json_schema", "json_object"]


@dataclass(frozen=True)
class OutputSchema:
    """A JSON schema the answer must follow (structured output). Clients that support it ask the server to
    enforce it (OpenAI-compatible `response_format`, Anthropic tool use) and return the JSON as the text."""

    name: str  # a short identifier: the response_format's name, the Anthropic tool's name
    description: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class LLMRequest:
    messages: tuple[Message, ...]
    system: str | None = None
    max_tokens: int = 8000
    temperature: float | None = 1.0
    thinking_budget: int | None = None  # Anthropic extended thinking budget in tokens (None = off)
    reasoning_effort: str | None = None  # OpenAI reasoning models: "low" | "medium" | "high"
    output: OutputSchema | None = None  # structured output: the answer's JSON schema (None = free text)

    def prompt_json(self) -> str:
        """The prompt as one JSON document (what a CallRecord stores)."""
        return json.dumps(
            {
                "system": self.system,
                "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            },
            ensure_ascii=False,
        )

    def prompt_text(self) -> str:
        """Everything the model reads, as one text (for estimating its tokens)."""
        return "\n".join([self.system or "", *(m.content for m in self.messages)])


@dataclass(frozen=True, kw_only=True)
class LLMResponse:
    text: str
    model: str
    provider: str
    input_tokens: int  # all prompt tokens, cached ones included
    output_tokens: int  # all generated tokens, thinking/reasoning included (as billed)
    cached_input_tokens: int = 0  # part of input_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # part of input_tokens: written to the provider's prompt cache
    thinking_tokens: int = 0  # part of output_tokens, where the API reports it
    cost_usd: float | None  # None when the model has no known price
    latency_s: float  # of the successful attempt (or of all attempts, once retried: see `attempts`)
    stop_reason: str | None = None  # as the API says it ("stop", "length", "end_turn", "max_tokens", ...)
    attempts: int = 1  # HTTP attempts this answer took (retries + 1)
    unanswered_attempts: int = 0  # of them, sent but never answered (timed out): billed, usage unknown
    structured: bool = False  # `text` is the JSON the request's OutputSchema asked for (tool input, ...)


def estimate_tokens(text: str) -> int:
    """Tokens of `text` without the provider's tokenizer: one per 3 bytes of UTF-8. BPE tokenizers average
    about 4 bytes per token on English and code, so this errs high, the safe side for a cost cap."""
    return -(-len(text.encode()) // 3)


class LLMClient(Protocol):
    provider: str
    model: str

    async def complete(self, request: LLMRequest) -> LLMResponse: ...


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One logical call (all its retry attempts) as handed to a recorder: success or failure."""

    role: str  # "ideator", "implementer", ...
    provider: str
    model: str
    prompt: str  # JSON of system + messages
    response: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_s: float  # wall time of the whole call, retries and backoff included
    error: str | None
    idea_id: int | None
    attempts: int = 1
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    thinking_tokens: int = 0
    # Cancelled while in flight, or attempts that timed out: no usage came back for them, yet the provider
    # bills their prompts, so input_tokens and cost_usd include an estimate from the request (`estimate_tokens`).
    cancelled: bool = False
    unanswered_attempts: int = 0
    estimated: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # what the caller noted about the answer


class LLMError(RuntimeError):
    """A call that could not produce an answer; the message says which provider/model and why."""

    def __init__(self, message: str, *, attempts: int = 1, unanswered: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.unanswered = unanswered  # attempts sent but never answered (timed out): billed, usage unknown


class TransientLLMError(LLMError):
    """One attempt failed in a way worth retrying (429, 5xx, connection error, timeout)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMConfigError(ValueError):
    """A client cannot be built: unknown provider, missing key, bad option. Raised at start."""


class BudgetExhausted(Exception):
    """The run's LLM spending reached its cap; raised before a call is made. Not an LLMError on
    purpose: callers that treat LLMError as "this idea failed" must not swallow a stop signal."""

    def __init__(self, spent_usd: float, cap_usd: float) -> None:
        super().__init__(
            f"LLM budget exhausted: spent ${spent_usd:.4f} of the ${cap_usd:.4f} cap (--max-cost-usd)"
        )
        self.spent_usd = spent_usd
        self.cap_usd = cap_usd
