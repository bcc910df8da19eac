"""A job's surroundings: its own copy of the environment, file hashes, and a scrubbed process environment.

Jobs run LLM-written code, so they never see the orchestrator's credentials: every variable whose name
looks like a secret, and every LLM-provider variable, is dropped (also from the manifest's `run.env`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from string import Template

from idealab.paths import DATA_DIR_VAR, data_dir

COPY_IGNORE = ("__pycache__", ".git", "*.pyc", ".mypy_cache", ".pytest_cache", ".ruff_cache")
MISSING_FILE_HASH = "missing"  # never a sha256 hex digest, so a deleted file always counts as changed

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

JOB_ID_VAR = "IDEALAB_JOB_ID"
NUM_GPUS_VAR = "IDEALAB_NUM_GPUS"

_SECRET_RE = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)


def copy_environment(src_dir: Path, dest: Path) -> Path:
    """Copy an environment directory to `dest` (which must not exist), keeping modes and symlinks."""
    shutil.copytree(src_dir, dest, symlinks=True, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    return dest


def hash_files(root: Path, rel_paths: Iterable[str]) -> dict[str, str]:
    """sha256 of each file under `root`; a missing (or non-regular) file hashes to MISSING_FILE_HASH."""
    hashes: dict[str, str] = {}
    for rel in rel_paths:
        path = root / rel
        if not path.is_file():
            hashes[rel] = MISSING_FILE_HASH
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        hashes[rel] = digest.hexdigest()
    return hashes


def is_credential(name: str) -> bool:
    upper = name.upper()
    if upper in NOT_CREDENTIALS:
        return False
    return bool(_SECRET_RE.search(upper)) or upper.startswith(PROVIDER_PREFIXES)


def scrubbed_environ(base: Mapping[str, str]) -> dict[str, str]:
    """`base` without credentials or provider variables."""
    return {name: value for name, value in base.items() if not is_credential(name)}


def job_environment(
    extra: Mapping[str, str],
    gpu_ids: Sequence[int],
    job_id: str,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment of a job process.

    Scrubbed `base` (default os.environ), the running interpreter's bin directory first on PATH (so
    `python` in a manifest command is this interpreter), the idealab variables, exactly the leased GPU ids
    in CUDA_VISIBLE_DEVICES (empty for a CPU job), then `extra` (the manifest's `run.env`) with `${VAR}`
    substituted from the variables set so far. Credentials are scrubbed again after substitution.
    """
    env = scrubbed_environ(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)  # not resolved: a venv's bin must stay the venv's
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *rest])
    env[DATA_DIR_VAR] = str(data_dir())
    env[JOB_ID_VAR] = job_id
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
    env[NUM_GPUS_VAR] = str(len(gpu_ids))
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in extra.items():
        env[name] = Template(value).safe_substitute(env)
    return scrubbed_environ(env)
