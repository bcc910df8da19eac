"""Providers by name, model specs ("anthropic:claude-opus-4-5") and `make_client`.

The SDK clients are imported by `make_client`, for the wire a provider speaks only: each SDK takes
seconds to import, and neither the CLI's start nor a run without an LLM should pay for them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from idealab.llm import keys
from idealab.llm.pricing import PriceTable, resolve_price
from idealab.llm.retry import RetryingClient, RetryPolicy
from idealab.llm.types import LLMClient, LLMConfigError

LOCAL_PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key, but the SDK wants one
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    wire: Literal["openai", "anthropic", "gemini"]
    key_vars: tuple[str, ...]  # environment variables holding the key, first set wins
    keys_field: str | None  # the keys.json field
    base_url: str | None = None  # default endpoint (None: the SDK's own)
    base_url_var: str | None = None  # variable that overrides the endpoint
    local: bool = False  # a server on this machine: a key is optional


PROVIDERS: dict[str, ProviderInfo] = {
    p.name: p
    for p in (
        ProviderInfo("openai", "openai", ("OPENAI_API_KEY",), "api_key", base_url_var="OPENAI_BASE_URL"),
        ProviderInfo(
            "anthropic",
            "anthropic",
            ("ANTHROPIC_API_KEY",),
            "anthropic_key",
            base_url_var="ANTHROPIC_BASE_URL",
        ),
        ProviderInfo(
            "gemini",
            "gemini",
            ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            "gemini_api_key",
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "GEMINI_BASE_URL",
        ),
        ProviderInfo(
            "deepseek",
            "openai",
            ("DEEPSEEK_API_KEY",),
            "deepseek_api_key",
            "https://api.deepseek.com/v1",
            "DEEPSEEK_BASE_URL",
        ),
        ProviderInfo(
            "together",
            "openai",
            ("TOGETHER_API_KEY",),
            "together_api_key",
            "https://api.together.xyz/v1",
            "TOGETHER_BASE_URL",
        ),
        ProviderInfo(
            "openrouter",
            "openai",
            ("OPENROUTER_API_KEY",),
            "openrouter_api_key",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_BASE_URL",
        ),
        ProviderInfo(
            "vllm", "openai", ("VLLM_API_KEY",), None, "http://localhost:8000/v1", "VLLM_BASE_URL", local=True
        ),
        ProviderInfo(
            "ollama", "openai", (), None, "http://localhost:11434/v1", "OLLAMA_BASE_URL", local=True
        ),
        ProviderInfo(
            "llamacpp", "openai", (), None, "http://localhost:8080/v1", "LLAMACPP_BASE_URL", local=True
        ),
    )
}


def parse_model_spec(spec: str) -> tuple[str, str]:
    """ "provider:model" -> (provider, model). The model part may itself hold colons (ollama tags)."""
    provider, sep, model = spec.partition(":")
    provider = provider.strip().lower()
    if not sep or not model.strip():
        raise LLMConfigError(
            f"model spec {spec!r} must look like 'provider:model' (e.g. 'anthropic:claude-opus-4-5'); "
            f"providers: {', '.join(PROVIDERS)}"
        )
    if provider not in PROVIDERS:
        raise LLMConfigError(
            f"unknown LLM provider {provider!r} in {spec!r}; valid providers: {', '.join(PROVIDERS)}"
        )
    return provider, model.strip()


def _has_google_genai() -> bool:
    try:
        return importlib.util.find_spec("google.genai") is not None
    except ModuleNotFoundError:  # no `google` namespace package at all
        return False


def is_local_url(url: str | None) -> bool:
    return url is not None and (urlparse(url).hostname or "") in _LOCAL_HOSTS


def resolve_base_url(spec: str, base_url: str | None = None) -> str | None:
    """The endpoint `spec` is called at: `base_url`, else the provider's variable, else its default
    (None: the SDK's own default endpoint)."""
    info = PROVIDERS[parse_model_spec(spec)[0]]
    return base_url or (os.environ.get(info.base_url_var) if info.base_url_var else None) or info.base_url


def make_client(
    spec: str,
    *,
    base_url: str | None = None,
    keys_file: Path | None = None,
    timeout_s: float = 600,
    max_retries: int = 5,
    api: Literal["chat", "responses"] = "chat",
    retry_base_delay_s: float = 1.0,
    retry_max_delay_s: float = 60.0,
    pricing: PriceTable | None = None,
) -> RetryingClient:
    """A retrying client for `spec`, its price resolved (`client.price`, None when unknown). Fails here,
    before any call, on a missing key or a bad option."""
    name, model = parse_model_spec(spec)
    info = PROVIDERS[name]
    if timeout_s <= 0 or max_retries < 0:
        raise LLMConfigError(f"timeout_s must be > 0 and max_retries >= 0 (got {timeout_s}, {max_retries})")
    if api == "responses" and name != "openai":
        raise LLMConfigError(f"api='responses' is OpenAI's own API; provider {name!r} supports api='chat'")
    url = resolve_base_url(spec, base_url)
    source = keys.key_source(keys_file)
    key = keys.lookup(source, info.key_vars, info.keys_field)
    if key is None:
        if not (info.local or is_local_url(url)):
            raise LLMConfigError(keys.missing_key_message(name, info.key_vars, info.keys_field, source))
        key = LOCAL_PLACEHOLDER_KEY
    price = resolve_price(name, model, local_provider=info.local, loopback=is_local_url(url), table=pricing)
    policy = RetryPolicy(
        max_retries=max_retries, base_delay_s=retry_base_delay_s, max_delay_s=retry_max_delay_s
    )
    inner: LLMClient
    if info.wire == "anthropic":
        from idealab.llm.anthropic_client import AnthropicClient

        inner = AnthropicClient(model=model, api_key=key, base_url=url, timeout_s=timeout_s, price=price)
    elif info.wire == "gemini" and url == info.base_url and _has_google_genai():
        from idealab.llm.gemini_client import GeminiClient

        inner = GeminiClient(model=model, api_key=key, timeout_s=timeout_s, price=price)
    else:
        from idealab.llm.openai_client import OpenAIApi, OpenAIClient

        organization = (
            keys.lookup(source, ("OPENAI_ORG_ID",), "organization_id") if name == "openai" else None
        )
        openai_api: OpenAIApi = api
        inner = OpenAIClient(
            provider=name,
            model=model,
            api_key=key,
            base_url=url,
            organization=organization,
            timeout_s=timeout_s,
            api=openai_api,
            price=price,
            # OpenAI's own API wants max_completion_tokens; many compatible servers know only max_tokens.
            legacy_max_tokens=name != "openai",
        )
    return RetryingClient(inner, policy, price)
