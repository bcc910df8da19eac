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

from idealab.llm import errors, keys
from idealab.llm.pricing import PriceTable, resolve_price
from idealab.llm.retry import RetryingClient, RetryPolicy
from idealab.llm.types import LLMClient, LLMConfigError, SchemaStyle

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
    # Structured output: whether `structured=auto` uses it (the provider enforces a JSON schema for every
    # model it serves), and how an OpenAI-compatible server is asked for it.
    structured: bool = False
    schema_style: SchemaStyle = "json_schema"


PROVIDERS: dict[str, ProviderInfo] = {
    p.name: p
    for p in (
        ProviderInfo(
            "openai", "openai", ("OPENAI_API_KEY",), "api_key", base_url_var="OPENAI_BASE_URL", structured=True
        ),
        ProviderInfo(
            "anthropic",
            "anthropic",
            ("ANTHROPIC_API_KEY",),
            "anthropic_key",
            base_url_var="ANTHROPIC_BASE_URL",
            structured=True,
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
            "vllm",
            "openai",
            ("VLLM_API_KEY",),
            None,
            "http://localhost:8000/v1",
            "VLLM_BASE_URL",
            local=True,
            structured=True,
        ),
        ProviderInfo(
            "ollama",
            "openai",
            (),
            None,
            "http://localhost:11434/v1",
            "OLLAMA_BASE_URL",
            local=True,
            structured=True,
        ),
        ProviderInfo(
            "llamacpp",
            "openai",
            (),
            None,
            "http://localhost:8080/v1",
            "LLAMACPP_BASE_URL",
            local=True,
            structured=True,
            schema_style="json_object",
        ),
    )
}


def parse_model_spec(spec: str, *, allow_unnamed: bool = False) -> tuple[str, str]:
    """ "provider:model" -> (provider, model). The model part may itself hold colons (ollama tags).

    With `allow_unnamed`, "provider:" (no model) gives (provider, ""): the model is then asked of the
    server (`discover_model`)."""
    provider, sep, model = spec.partition(":")
    provider = provider.strip().lower()
    if not sep or not (model.strip() or allow_unnamed):
        raise LLMConfigError(
            f"model spec {spec!r} must look like 'provider:model' (e.g. 'anthropic:claude-opus-4-5', or "
            f"'llamacpp:' to use the model a local server serves); providers: {', '.join(PROVIDERS)}"
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


def endpoint(name: str, base_url: str | None) -> str | None:
    """The URL a provider's client talks to: --base-url, else its environment variable, else its default."""
    info = PROVIDERS[name]
    return base_url or (os.environ.get(info.base_url_var) if info.base_url_var else None) or info.base_url


def is_local(name: str, base_url: str | None) -> bool:
    """A server on this machine (a local provider, or any provider pointed at loopback)."""
    return PROVIDERS[name].local or is_local_url(endpoint(name, base_url))


def discover_model(spec: str, *, base_url: str | None = None, timeout_s: float = 30.0) -> str:
    """`spec` with its model named: "llamacpp:" becomes "llamacpp:<the model the server lists first>".

    Asks the server's `/models` (OpenAI-compatible servers only). A server that lists several models
    (Ollama) must be told which one: the error lists them."""
    name, model = parse_model_spec(spec, allow_unnamed=True)
    if model:
        return f"{name}:{model}"
    info = PROVIDERS[name]
    url = endpoint(name, base_url)
    if info.wire != "openai" or not is_local(name, base_url):
        raise LLMConfigError(
            f"{spec!r} names no model; only a local OpenAI-compatible server (vllm, llamacpp, ollama, or a "
            f"provider with a loopback --base-url) is asked for it: give 'provider:model'"
        )
    import openai  # imported here, as in make_client: only a run that asks a server pays for the SDK

    key = keys.lookup(keys.key_source(None), info.key_vars, info.keys_field) or LOCAL_PLACEHOLDER_KEY
    sdk = openai.OpenAI(api_key=key, base_url=url, timeout=timeout_s, max_retries=0)
    try:
        ids = [m.id for m in sdk.models.list()]
    except openai.OpenAIError as exc:
        mapped = errors.from_sdk(openai, exc, f"{name} at {url}", timeout_s)
        raise LLMConfigError(f"cannot list the models of {name} at {url}: {mapped or exc}") from None
    finally:
        sdk.close()
    if len(ids) != 1:
        served = ", ".join(ids) or "none"
        raise LLMConfigError(f"{name} at {url} serves {len(ids)} models ({served}): name one as '{name}:MODEL'")
    return f"{name}:{ids[0]}"


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
    schema_style: SchemaStyle | None = None,
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
            schema_style=schema_style or info.schema_style,
        )
    return RetryingClient(inner, policy, price)
