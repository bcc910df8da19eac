"""Turning what an SDK raised, or what it returned, into idealab's LLMError / TransientLLMError."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from idealab.llm.types import LLMError, TransientLLMError

# 408 request timeout, 409 conflict (lock), 429 rate limit, 5xx server errors (529 = Anthropic overloaded)
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
_EXCERPT = 300


def excerpt(text: object) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _EXCERPT else flat[:_EXCERPT] + "..."


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked us to wait: `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return float(lowered["retry-after-ms"]) / 1000
        except ValueError:
            pass  # malformed: fall through to retry-after
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass  # not seconds: maybe an HTTP date
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_error(label: str, status: int, message: str, headers: Mapping[str, str]) -> LLMError:
    text = f"{label}: HTTP {status}: {excerpt(message)}"
    if status in RETRYABLE_STATUS:
        return TransientLLMError(text, retry_after_s=retry_after_s(headers))
    return LLMError(text)


def timeout_error(label: str, timeout_s: float) -> TransientLLMError:
    error = TransientLLMError(f"{label}: no answer within the {timeout_s:g} s timeout")
    error.unanswered = 1  # the request reached the provider, which bills it though we stopped waiting
    return error


def connection_error(label: str, exc: BaseException) -> TransientLLMError:
    cause = exc.__cause__ or exc
    return TransientLLMError(f"{label}: connection error: {excerpt(cause) or type(cause).__name__}")


def unreadable(label: str, what: object, detail: str) -> LLMError:
    return LLMError(
        f"{label}: the server's answer is not a valid response ({detail}); it began: {excerpt(what)!r}"
    )


def from_sdk(sdk: ModuleType, exc: BaseException, label: str, timeout_s: float) -> LLMError | None:
    """The LLMError for an exception of the `openai` or `anthropic` SDK (both name their errors alike),
    or None when `exc` is none of them (a bug, to be raised as it is)."""
    if isinstance(exc, sdk.APITimeoutError | TimeoutError):
        return timeout_error(label, timeout_s)
    if isinstance(exc, sdk.APIStatusError):
        status: Any = exc
        return status_error(label, status.status_code, status.message, status.response.headers)
    if isinstance(exc, sdk.APIConnectionError):
        return connection_error(label, exc)
    if isinstance(exc, sdk.APIError):  # e.g. a body that is not JSON
        api: Any = exc
        return unreadable(label, api.body, api.message)
    if isinstance(exc, json.JSONDecodeError):  # a JSON content type over a body that is not JSON
        return unreadable(label, exc.doc, "not JSON")
    return None
