"""LLM clients: one interface over OpenAI (and compatible servers), Anthropic and Gemini."""

from idealab.llm.pricing import Price, PriceTable, load_price_table
from idealab.llm.registry import PROVIDERS, discover_model, is_local, make_client, parse_model_spec
from idealab.llm.retry import RetryingClient, RetryPolicy
from idealab.llm.service import Annotator, LLMService, Recorder
from idealab.llm.types import (
    BudgetExhausted,
    CallRecord,
    LLMClient,
    LLMConfigError,
    LLMError,
    LLMRequest,
    LLMResponse,
    Message,
    OutputSchema,
    TransientLLMError,
)

__all__ = [
    "PROVIDERS",
    "Annotator",
    "BudgetExhausted",
    "CallRecord",
    "LLMClient",
    "LLMConfigError",
    "LLMError",
    "LLMRequest",
    "LLMResponse",
    "LLMService",
    "Message",
    "OutputSchema",
    "Price",
    "PriceTable",
    "Recorder",
    "RetryPolicy",
    "RetryingClient",
    "TransientLLMError",
    "discover_model",
    "is_local",
    "load_price_table",
    "make_client",
    "parse_model_spec",
]
