"""LLM prices: the default table in `idealab/pricing.toml`, extended by the user's own TOML file."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idealab.llm.types import LLMConfigError

PRICING_VAR = "IDEALAB_PRICING"
DEFAULT_PRICING = Path(__file__).resolve().parent.parent / "pricing.toml"
_DATED = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$")
_PRICE_KEYS = {"input", "output", "cached_input"}


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cached_input: float

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """`input_tokens` counts all prompt tokens; the cached part of them is billed at its own rate."""
        cached = min(cached_input_tokens, input_tokens)
        return (
            (input_tokens - cached) * self.input + cached * self.cached_input + output_tokens * self.output
        ) / 1e6


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, Mapping[str, Price]]  # provider -> model -> price
    as_of: str | None = None

    def lookup(self, provider: str, model: str) -> Price | None:
        models = self.prices.get(provider, {})
        if model in models:
            return models[model]
        undated = _DATED.sub("", model)
        return models.get(undated)


def _parse(path: Path, data: Mapping[str, Any]) -> dict[str, dict[str, Price]]:
    table: dict[str, dict[str, Price]] = {}
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
                    f"{where}: expected {{ input = $, output = $, cached_input = $ (optional) }}"
                )
            values = {k: v for k, v in spec.items()}
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values.values()
            ):
                raise LLMConfigError(f"{where}: prices must be non-negative numbers of $ per million tokens")
            table.setdefault(provider, {})[model] = Price(
                input=float(values["input"]),
                output=float(values["output"]),
                cached_input=float(values.get("cached_input", values["input"])),
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
    """The default table, with `extra` (or $IDEALAB_PRICING) merged over it model by model."""
    base = _read(DEFAULT_PRICING)
    prices = _parse(DEFAULT_PRICING, base)
    as_of = base.get("as_of")
    user = extra or (Path(os.environ[PRICING_VAR]).expanduser() if os.environ.get(PRICING_VAR) else None)
    if user is not None:
        for provider, models in _parse(user, _read(user)).items():
            prices.setdefault(provider, {}).update(models)
    return PriceTable(prices, str(as_of) if as_of is not None else None)
