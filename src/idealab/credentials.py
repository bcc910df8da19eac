"""Which environment variables a job may see: an allow-list, with a deny-list kept as a second net.

A job runs model-written code, so its environment is built from the names it is allowed, never from the
names it is denied: a credential under a name nobody thought of (DATABASE_URL, GH_PAT, HF_AUTH) is
dropped because it is not listed. `DEFAULT_ALLOWED` covers what a training program needs (search path,
locale, CUDA/NCCL/thread settings, idealab's own variables); a manifest adds names with `[run] allow_env`.
The deny-list (`is_credential`) still removes credential-looking names matched only by a default pattern
(IDEALAB_LLM_API_KEY matches IDEALAB_*), and refuses them in `run.env`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

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

# What every job may see of the orchestrator's environment (a trailing * matches any suffix). HOME is not
# here: a job gets a private, empty home directory of its own.
DEFAULT_ALLOWED = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "CUDA_*",
    "NCCL_*",
    "NVIDIA_*",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "PYTORCH_CUDA_ALLOC_CONF",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "LD_LIBRARY_PATH",
    "IDEALAB_*",
)


def is_credential(name: str) -> bool:
    """True for a variable that must never reach a job (by its name alone)."""
    upper = name.upper()
    if upper in NOT_CREDENTIALS:
        return False
    return bool(_SECRET_RE.search(upper)) or upper.startswith(PROVIDER_PREFIXES)


def matches(name: str, pattern: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


def allowed_environ(base: Mapping[str, str], extra_allowed: Iterable[str] = ()) -> dict[str, str]:
    """The part of `base` a job may see: names matching `DEFAULT_ALLOWED` (minus credential-looking
    ones), plus the names (or `PREFIX*` patterns) a manifest listed explicitly, which pass as they are
    (the environment's author asked for them, e.g. WANDB_API_KEY with `network = true`)."""
    explicit = tuple(extra_allowed)
    kept = {}
    for name, value in base.items():
        if any(matches(name, p) for p in explicit):
            kept[name] = value
        elif any(matches(name, p) for p in DEFAULT_ALLOWED) and not is_credential(name):
            kept[name] = value
    return kept
