"""LLM prices. Where a price comes from, first match wins:

1. a price file: the bundled `idealab/pricing.toml`, extended by the user's $IDEALAB_PRICING, model by model;
2. a server on this machine: the known local providers (vllm, ollama, llamacpp) cost nothing;
3. the maintained price library `genai-prices` (offline data, see `library_prices`);
4. an OpenAI-compatible server on a loopback address serving a model the library does not know costs
   nothing (a local proxy in front of a paid API serves models the library knows, so those stay priced);
5. otherwise the price is unknown (None): calls count tokens only, and a cost cap refuses to start.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from idealab.llm.types import LLMConfigError

PRICING_VAR = "IDEALAB_PRICING"
DEFAULT_PRICING = Path(__file__).resolve().parent.parent / "pricing.toml"
_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$")
_PRICE_KEYS = {"input", "output", "cached_input", "cache_write"}


class Price(Protocol):
    """What a call costs in US dollars. `input_tokens` counts every prompt token; the cached reads and the
    cache writes among them are billed at their own rates."""

    @property
    def source(self) -> str: ...

    def cost(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float: ...


@dataclass(frozen=True)
class FlatPrice:
    """US dollars per million tokens, as a price file states them."""

    input: float
    output: float
    cached_input: float
    cache_write: float
    source: str = "price file"

    def cost(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        cached = min(cached_input_tokens, input_tokens)
        written = min(cache_write_tokens, input_tokens - cached)
        uncached = input_tokens - cached - written
        return (
            uncached * self.input + cached * self.cached_input + written * self.cache_write
            + output_tokens * self.output
        ) / 1e6  # fmt: skip


LOCAL = FlatPrice(0.0, 0.0, 0.0, 0.0, source="local server")


@dataclass(frozen=True)
class PriceTable:
    """The price files' entries: provider -> model -> price."""

    prices: Mapping[str, Mapping[str, FlatPrice]]
    as_of: str | None = None

    def lookup(self, provider: str, model: str) -> FlatPrice | None:
        models = self.prices.get(provider, {})
        if model in models:
            return models[model]
        undated = _DATED.sub("", model)
        return models.get(undated)


def resolve_price(
    provider: str, model: str, *, local_provider: bool, loopback: bool, table: PriceTable | None = None
) -> Price | None:
    """The price of `provider:model` by the order in this module's docstring."""
    from_file = (table or load_price_table()).lookup(provider, model)
    if from_file is not None:
        return from_file
    if local_provider:
        return LOCAL
    from idealab.llm import library_prices  # loads the library's data: only when a client is built

    from_library = library_prices.lookup(provider, model)
    if from_library is not None:
        return from_library
    return LOCAL if loopback else None


def _parse(path: Path, data: Mapping[str, Any]) -> dict[str, dict[str, FlatPrice]]:
    table: dict[str, dict[str, FlatPrice]] = {}
    for provider, models in data.items():
        if provider == "as_of":
            continue
        if not isinstance(models, dict):
            raise LLMConfigError(f"{path}: [{provider}] must be a table of model = {{ input, output }}")
        for model, spec in models.items():
            where = f"{path}: {provider}.{model!r}"
            if (
                not isinstance(spec, dict)
                or not {"input", "output"} <= set(spec)
                or not set(spec) <= _PRICE_KEYS
            ):
                raise LLMConfigError(
                    f"{where}: expected {{ input = $, output = $, cached_input = $, cache_write = $ }} "
                    "(the last two optional)"
                )
            values = {k: v for k, v in spec.items()}
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values.values()
            ):
                raise LLMConfigError(f"{where}: prices must be non-negative numbers of $ per million tokens")
            table.setdefault(provider, {})[model] = FlatPrice(
                input=float(values["input"]),
                output=float(values["output"]),
                cached_input=float(values.get("cached_input", values["input"])),
                cache_write=float(values.get("cache_write", values["input"])),
                source=str(path),
            )
    return table


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise LLMConfigError(f"cannot read price table {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LLMConfigError(f"price table {path} is not valid TOML: {exc}") from None


def load_price_table(extra: Path | None = None) -> PriceTable:
    """The bundled price file, with `extra` (or $IDEALAB_PRICING) merged over it model by model."""
    base = _read(DEFAULT_PRICING)
    prices = _parse(DEFAULT_PRICING, base)
    as_of = base.get("as_of")
    user = extra or (Path(os.environ[PRICING_VAR]).expanduser() if os.environ.get(PRICING_VAR) else None)
    if user is not None:
        for provider, models in _parse(user, _read(user)).items():
            prices.setdefault(provider, {}).update(models)
    return PriceTable(prices, str(as_of) if as_of is not None else None)
