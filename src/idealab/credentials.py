"""Which environment variables count as credentials (kept out of every job's environment)."""

from __future__ import annotations

import re

# A name containing any of these words (any case) is treated as a credential: HF_TOKEN, WANDB_API_KEY,
# GITHUB_TOKEN, DB_PASSWORD, GOOGLE_APPLICATION_CREDENTIALS...
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
# LLM and cloud provider variables (base URLs, organisations, regions...), dropped whatever their name.
PROVIDER_PREFIXES = (
    "OPENAI_",
    "ANTHROPIC_",
    "GEMINI_",
    "GOOGLE_API",
    "GOOGLE_GENAI",
    "DEEPSEEK_",
    "TOGETHER_",
    "OPENROUTER_",
    "AWS_",
    "AZURE_OPENAI_",
    "MISTRAL_",
    "COHERE_",
    "GROQ_",
    "XAI_",
    "FIREWORKS_",
    "IDEALAB_LLM_",
)
# Settings whose names merely look like credentials.
NOT_CREDENTIALS = frozenset({"TOKENIZERS_PARALLELISM"})
_SECRET_RE = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)


def is_credential(name: str) -> bool:
    """True for a variable that must never reach a job (by its name alone)."""
    upper = name.upper()
    if upper in NOT_CREDENTIALS:
        return False
    return bool(_SECRET_RE.search(upper)) or upper.startswith(PROVIDER_PREFIXES)
