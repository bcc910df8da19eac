"""Prices from `genai-prices`, the maintained price library (its data ships inside the package, so a lookup
never touches the network; we never call its auto-update).

Imported only when an LLM client is built: the library's data module takes a few hundred milliseconds to
load, which commands without an LLM should not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import genai_prices
from genai_prices import data_snapshot

# Our provider names where the library's differ; every other name is the same in both.
_PROVIDER_IDS = {"gemini": "google"}


@dataclass(frozen=True)
class LibraryPrice:
    """A model's prices as the library has them; tiered prices (long prompts) are applied per call."""

    provider: Any  # genai_prices.types.Provider
    info: Any  # genai_prices.types.ModelInfo
    source: str = f"genai-prices {genai_prices.__version__}"

    def cost(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, cache_write_tokens: int = 0
    ) -> float:
        # The library's input_tokens, like ours, counts every prompt token, cache reads and writes included.
        usage = genai_prices.Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=min(cached_input_tokens, input_tokens),
            cache_write_tokens=min(cache_write_tokens, input_tokens),
        )
        calculation = self.info.calc_price(usage, self.provider, genai_request_timestamp=datetime.now(tz=UTC))
        return float(calculation.total_price)


def lookup(provider: str, model: str) -> LibraryPrice | None:
    """The library's price of `model` at `provider` (dated names resolve to their model), or None."""
    try:
        found_provider, info = data_snapshot.get_snapshot().find_provider_model(
            model, None, _PROVIDER_IDS.get(provider, provider), None
        )
    except LookupError:  # the library knows neither this provider nor this model
        return None
    return LibraryPrice(found_provider, info)
