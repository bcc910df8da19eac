"""The LLM ideator (`--ideator llm --model provider:model`) and the builder that pairs it with the LLM
implementer.

Defaults follow the paper's released code: temperature 1.0, up to 10,000 output tokens, Anthropic extended
thinking with a budget of 3,000 tokens at epoch 0 and 1,500 later, OpenAI reasoning effort "low". Every
setting can be changed (see `LLMSettings` and docs/llm.md): `IdeatorOptions.extra` pairs win over
`IDEALAB_LLM_<NAME>` environment variables, which win over the defaults.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, cast

from idealab.errors import StopRun
from idealab.ideators.base import IdeaKind, IdeaProposal, IdeationRequest
from idealab.ideators.idea_parser import (
    IDEAS_DESCRIPTION,
    IDEAS_TOOL,
    ParsedIdea,
    drop_repeats,
    ideas_schema,
    parse_ideas,
    parse_structured,
)
from idealab.ideators.llm_implementer import Completer, ImplementerSettings, LLMImplementer
from idealab.ideators.prompting import ideation_prompt
from idealab.ideators.registry import Built, IdeatorOptions
from idealab.llm import (
    PROVIDERS,
    Annotator,
    BudgetExhausted,
    LLMConfigError,
    LLMError,
    LLMRequest,
    LLMResponse,
    LLMService,
    Message,
    OutputSchema,
    discover_model,
    is_local,
    make_client,
    parse_model_spec,
)
from idealab.llm.pricing import PRICING_VAR
from idealab.llm.registry import resolve_base_url
from idealab.manifest import Manifest

log = logging.getLogger(__name__)

SETTINGS_VAR_PREFIX = "IDEALAB_LLM_"
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")  # OpenAI models that take a reasoning effort
STRUCTURED_CHOICES = ("auto", "on", "off")
# Per HTTP attempt. A local server generates thousands of tokens on a CPU or a small GPU at a few tokens
# a second, and queues parallel requests: it gets longer than a hosted API.
REMOTE_TIMEOUT_S = 600.0
LOCAL_TIMEOUT_S = 3600.0
LOCAL_IDEA_CHARS = 600  # maxLength of each idea text in a local server's schema (see ideas_schema)


@dataclass(frozen=True)
class LLMSettings:
    """Everything about how the LLMs are called. Thinking budgets of 0 turn thinking off."""

    temperature: float = 1.0
    ideator_max_tokens: int = 10000
    thinking_budget_initial: int = 3000  # Anthropic, epoch 0 (released code: 3000)
    thinking_budget_later: int = 1500  # Anthropic, epochs >= 1 (released code: 1500)
    reasoning_effort: str = "low"  # OpenAI reasoning models (o-series, gpt-5*); "off" sends none
    implementer_max_tokens: int = 10000
    implementer_thinking_budget: int = 1500
    implement_mode: str = "parallel"  # "parallel" (the paper) | "sequential" (the released code)
    samples: int = 4  # parallel mode: candidate changes per idea (the paper: 10)
    revisions: int = 2  # parallel mode: revisions per candidate (the paper: 2)
    sequential_attempts: int = 10  # sequential mode: attempts per idea (the released code: 10)
    preflight_slots: int = 2
    timeout_s: float = 0.0  # per HTTP attempt; 0: 600 s, or 3600 s for a local server
    max_retries: int = 5
    retry_base_delay_s: float = 1.0
    api: str = "chat"  # OpenAI: "chat" (completions) | "responses"
    # LLM calls in flight at once, per model, with separate slots for the two roles so that ideation never
    # queues behind implementation (4 ideas of 4 samples fill the implementer's 16).
    ideator_max_calls: int = 4
    implementer_max_calls: int = 16
    prompt_cache: str = "on"  # "on": mark the implementer's codebase prefix for prompt caching | "off"
    structured: str = "auto"  # ideation as schema-enforced JSON: "auto" (where supported) | "on" | "off"

    def __post_init__(self) -> None:
        if self.structured not in STRUCTURED_CHOICES:
            raise ValueError(f"structured must be one of {', '.join(STRUCTURED_CHOICES)}, got {self.structured!r}")
        if self.timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0 (0: the default for the server), got {self.timeout_s}")
        if self.prompt_cache not in ("on", "off"):
            raise ValueError(f"prompt_cache must be 'on' or 'off', got {self.prompt_cache!r}")
        if self.implement_mode not in ("parallel", "sequential"):
            raise ValueError(f"implement_mode must be 'parallel' or 'sequential', got {self.implement_mode!r}")
        if self.api not in ("chat", "responses"):
            raise ValueError(f"api must be 'chat' or 'responses', got {self.api!r}")
        budgets = (self.thinking_budget_initial, self.thinking_budget_later, self.implementer_thinking_budget)
        if min(budgets) < 0:
            raise ValueError("thinking budgets must be >= 0 (0 turns thinking off)")
        if max(self.thinking_budget_initial, self.thinking_budget_later) >= self.ideator_max_tokens:
            raise ValueError("ideator_max_tokens must exceed the ideator's thinking budgets")
        if self.implementer_thinking_budget >= self.implementer_max_tokens:
            raise ValueError("implementer_max_tokens must exceed implementer_thinking_budget")
        if min(self.ideator_max_calls, self.implementer_max_calls) < 1:
            raise ValueError("ideator_max_calls and implementer_max_calls must be >= 1")

    @classmethod
    def from_sources(
        cls,
        pairs: Iterable[tuple[str, str]],
        environ: Mapping[str, str],
        base: Mapping[str, object] | None = None,
    ) -> LLMSettings:
        """`base` (a resumed run's stored settings, else the defaults), overridden by IDEALAB_LLM_<NAME>
        variables, overridden by `pairs` (name, value)."""
        known = {f.name for f in fields(cls)}
        given = {name: text for name, (text, _) in given_settings(pairs, environ).items()}
        values: dict[str, object] = {k: v for k, v in (base or {}).items() if k in known}
        defaults = cls()
        for name, text in given.items():
            kind = type(getattr(defaults, name))
            try:
                values[name] = kind(text)
            except ValueError:
                raise ValueError(f"LLM setting {name}: expected a {kind.__name__}, got {text!r}") from None
        return cls(**values)  # type: ignore[arg-type]

    def implementer(self, provider: str, model: str) -> ImplementerSettings:
        sequential = self.implement_mode == "sequential"
        return ImplementerSettings(
            samples=1 if sequential else self.samples,
            revisions=self.sequential_attempts - 1 if sequential else self.revisions,
            max_tokens=self.implementer_max_tokens,
            temperature=self.temperature,
            thinking_budget=_thinking(provider, self.implementer_thinking_budget),
            reasoning_effort=_effort(provider, model, self.reasoning_effort),
            preflight_slots=self.preflight_slots,
            prompt_cache=self.prompt_cache == "on",
        )


def given_settings(pairs: Iterable[tuple[str, str]], environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The settings given for this invocation: name -> (value as text, where it came from)."""
    known = [f.name for f in fields(LLMSettings)]
    given: dict[str, tuple[str, str]] = {}
    for name in known:
        var = f"{SETTINGS_VAR_PREFIX}{name.upper()}"
        if var in environ:
            given[name] = (environ[var], var)
    for name, value in pairs:
        key = name.strip().lower().replace("-", "_")
        if key not in known:
            raise ValueError(f"unknown LLM setting {name!r}; valid: {', '.join(known)}")
        given[key] = (value, "--llm-option")
    return given


def use_structured(setting: str, provider: str) -> bool:
    """Whether ideation asks `provider` for structured output. "on" where the provider cannot enforce a
    schema is a configuration error, not a silent fallback."""
    info = PROVIDERS[provider]
    if setting == "on" and info.wire == "gemini":
        raise ValueError(
            "structured=on: idealab asks Gemini for structured output only through its OpenAI-compatible "
            "endpoint; use structured=off, or --base-url https://generativelanguage.googleapis.com/v1beta/openai/"
        )
    return setting == "on" or (setting == "auto" and info.structured)


def _thinking(provider: str, budget: int) -> int | None:
    return budget if budget > 0 and PROVIDERS[provider].wire == "anthropic" else None


def _effort(provider: str, model: str, effort: str) -> str | None:
    if effort == "off" or provider != "openai" or not _REASONING_MODEL.match(model):
        return None
    return effort


def read_ideas(response: LLMResponse) -> tuple[list[ParsedIdea], str]:
    """The ideas in an answer and how they were read: "structured" (the schema's JSON), "text" (tagged
    text, or JSON in prose), or "none". A structured answer that is not valid JSON (cut short at the token
    limit, or a model that called no tool) falls back to the text parser."""
    if response.structured:
        ideas = parse_structured(response.text)
        if ideas:
            return ideas, "structured"
    ideas = parse_ideas(response.text)
    return ideas, "text" if ideas else "none"


def parse_note(response: LLMResponse) -> dict[str, Any]:
    """What an ideation answer held, stored in its call's `extra`: counts parse failures per run."""
    ideas, how = read_ideas(response)
    return {"ideas": len(ideas), "format": how, "structured": response.structured}


class LLMIdeator:
    """Asks the model for `request.count` ideas per call, in the tagged format or as structured JSON;
    parses what comes back."""

    name = "llm"

    def __init__(
        self,
        service: Completer,
        provider: str,
        model: str,
        settings: LLMSettings | None = None,
        *,
        local: bool = False,  # a local server: its schema bounds each idea's length
    ) -> None:
        self.service = service
        self.provider = provider
        self.model = model
        self.settings = settings or LLMSettings()
        self.structured = use_structured(self.settings.structured, provider)
        self.max_idea_chars = LOCAL_IDEA_CHARS if local else None

    def request(self, manifest: Manifest, request: IdeationRequest) -> LLMRequest:
        system, user = ideation_prompt(manifest, request, structured=self.structured)
        s = self.settings
        budget = s.thinking_budget_initial if request.kind is IdeaKind.INITIAL else s.thinking_budget_later
        schema = ideas_schema(request.count, self.max_idea_chars)
        output = OutputSchema(IDEAS_TOOL, IDEAS_DESCRIPTION, schema) if self.structured else None
        return LLMRequest(
            (Message("user", user),),
            system=system,
            max_tokens=s.ideator_max_tokens,
            temperature=s.temperature,
            thinking_budget=_thinking(self.provider, budget),
            reasoning_effort=_effort(self.provider, self.model, s.reasoning_effort),
            output=output,
        )

    async def propose(self, manifest: Manifest, request: IdeationRequest) -> list[IdeaProposal]:
        try:
            response = await self.service.complete(
                self.request(manifest, request), role="ideator", annotate=parse_note
            )
        except BudgetExhausted as exc:
            raise StopRun(str(exc)) from exc
        except LLMError as exc:  # recorded by the service; the loop asks again
            log.warning("ideation call failed (epoch %d, %s): %s", request.epoch, request.kind.value, exc)
            return []
        parsed, how = read_ideas(response)
        ideas = drop_repeats(parsed, request.avoid)[: request.count]
        if how == "none":
            log.warning(
                "the ideator's answer held no idea in a known format (epoch %d, stop reason %s)",
                request.epoch,
                response.stop_reason,
            )
        elif not ideas:
            log.warning("the ideator's answer held only repeated ideas (epoch %d)", request.epoch)
        return [
            IdeaProposal(idea.text, None, {"experiment": idea.experiment, "code_changes": idea.code_changes})
            for idea in ideas
        ]


# ---------------------------------------------------------------------------------------------- builder


class _SharedCap:
    """The ideator's and the implementer's services (two models) under one cost cap."""

    def __init__(self, service: LLMService, services: tuple[LLMService, ...], cap: float | None) -> None:
        self.service = service
        self.services = services
        self.cap = cap

    async def complete(
        self, request: LLMRequest, *, role: str, idea_id: int | None = None, annotate: Annotator | None = None
    ) -> LLMResponse:
        spent = sum(s.spent_usd for s in self.services)
        if self.cap is not None and spent >= self.cap:
            raise BudgetExhausted(spent, self.cap)
        return await self.service.complete(request, role=role, idea_id=idea_id, annotate=annotate)


def build(options: IdeatorOptions) -> Built:
    """Clients for the ideator's and the implementer's models, checked (keys, settings, prices) before
    any call; `Built.settings` are the resolved settings, stored with the run."""
    if not options.model:
        raise ValueError("--ideator llm needs --model provider:model (e.g. anthropic:claude-opus-4-5)")
    stored = options.stored_settings or {}
    given = given_settings(options.extra, os.environ)
    settings = LLMSettings.from_sources(options.extra, os.environ, base=stored.get("settings"))
    try:  # "llamacpp:" names no model: ask the server which one it serves
        ideator_spec = discover_model(options.model, base_url=options.base_url)
        implementer_spec = (
            discover_model(options.implementer_model, base_url=options.base_url)
            if options.implementer_model
            else ideator_spec
        )
    except LLMConfigError as exc:
        raise ValueError(str(exc)) from None
    ideator_provider, ideator_model = parse_model_spec(ideator_spec)
    implementer_provider, implementer_model = parse_model_spec(implementer_spec)
    # --base-url names the main model's server; another provider's model uses its own endpoint.
    implementer_base = options.base_url if implementer_provider == ideator_provider else None

    def service(spec: str, base_url: str | None, spent_usd: float) -> LLMService:
        # Only OpenAI itself has the responses API; every other provider is called through chat.
        provider = parse_model_spec(spec)[0]
        api = cast(Literal["chat", "responses"], settings.api) if provider == "openai" else "chat"
        timeout_s = settings.timeout_s or (LOCAL_TIMEOUT_S if is_local(provider, base_url) else REMOTE_TIMEOUT_S)
        client = make_client(
            spec, base_url=base_url, keys_file=options.keys_file, timeout_s=timeout_s,
            max_retries=settings.max_retries, api=api, retry_base_delay_s=settings.retry_base_delay_s,
        )  # fmt: skip
        if options.max_cost_usd is not None and client.price is None:
            raise LLMConfigError(
                f"no known price for {spec}, so --max-cost-usd cannot count its calls: give its price in a "
                f"TOML file named by {PRICING_VAR} (see 'Costs' in docs/llm.md), or run without --max-cost-usd"
            )
        limits = {"ideator": settings.ideator_max_calls, "implementer": settings.implementer_max_calls}
        return LLMService(
            client, role_limits=limits, max_cost_usd=options.max_cost_usd, recorder=options.recorder,
            spent_usd=spent_usd, price=client.price,
        )  # fmt: skip

    ideator_service = service(ideator_spec, options.base_url, options.spent_usd)
    ideator_calls: Completer = ideator_service
    implementer_calls: Completer = ideator_service
    if implementer_spec != ideator_spec:
        implementer_service = service(implementer_spec, implementer_base, 0.0)
        both = (ideator_service, implementer_service)
        ideator_calls = _SharedCap(ideator_service, both, options.max_cost_usd)
        implementer_calls = _SharedCap(implementer_service, both, options.max_cost_usd)
    local = is_local(ideator_provider, options.base_url)
    ideator = LLMIdeator(ideator_calls, ideator_provider, ideator_model, settings, local=local)
    implementer = LLMImplementer(implementer_calls, settings.implementer(implementer_provider, implementer_model))
    described = {
        "model": ideator_spec,
        "base_url": resolve_base_url(ideator_spec, options.base_url),
        "implementer_model": implementer_spec,
        "implementer_base_url": resolve_base_url(implementer_spec, implementer_base),
        "settings": asdict(settings),
        "given": {name: source for name, (_, source) in given.items()},  # where this invocation's came from
    }
    return Built(ideator, implementer, described)
