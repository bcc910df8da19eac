"""LLM clients: one interface over OpenAI (and compatible servers), Anthropic and Gemini."""

from idealab.llm.pricing import Price, PriceTable, load_price_table
from idealab.llm.registry import PROVIDERS, make_client, parse_model_spec
from idealab.llm.retry import RetryingClient, RetryPolicy
from idealab.llm.service import LLMService, Recorder
from idealab.llm.types import (
    BudgetExhausted,
    CallRecord,
    LLMClient,
    LLMConfigError,
    LLMError,
    LLMRequest,
    LLMResponse,
    Message,
    TransientLLMError,
)

__all__ = [
    "PROVIDERS",
    "BudgetExhausted",
    "CallRecord",
    "LLMClient",
    "LLMConfigError",
    "LLMError",
    "LLMRequest",
    "LLMResponse",
    "LLMService",
    "Message",
    "Price",
    "PriceTable",
    "Recorder",
    "RetryPolicy",
    "RetryingClient",
    "TransientLLMError",
    "load_price_table",
    "make_client",
    "parse_model_spec",
]
