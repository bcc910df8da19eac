"""API keys: environment variables, or a `keys.json` with the original system's field names.

Order: a keys file given explicitly (`--keys-file`, or $IDEALAB_KEYS_FILE) wins; then the provider's
environment variables; then `keys.json` in the working directory, if there is one (the original read
that file). Field names: `api_key` (OpenAI), `anthropic_key`, `deepseek_api_key`, `bedrock_api_key`,
`organization_id`, `gemini_api_key`, `together_api_key`, `openrouter_api_key`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from idealab.llm.types import LLMConfigError

KEYS_FILE_VAR = "IDEALAB_KEYS_FILE"
DEFAULT_KEYS_FILE = "keys.json"


@dataclass(frozen=True)
class KeySource:
    """The keys.json in force (if any) and whether it was named explicitly."""

    fields: dict[str, str]
    path: Path | None
    explicit: bool


def read_keys_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise LLMConfigError(f"cannot read keys file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise LLMConfigError(f"keys file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LLMConfigError(f"keys file {path} must hold a JSON object of field: key")
    return {str(k): v for k, v in data.items() if isinstance(v, str) and v}


def key_source(keys_file: Path | None = None) -> KeySource:
    if keys_file is not None:
        return KeySource(read_keys_file(keys_file), keys_file, explicit=True)
    named = os.environ.get(KEYS_FILE_VAR)
    if named:
        path = Path(named).expanduser()
        return KeySource(read_keys_file(path), path, explicit=True)
    default = Path.cwd() / DEFAULT_KEYS_FILE
    if default.is_file():
        return KeySource(read_keys_file(default), default, explicit=False)
    return KeySource({}, None, explicit=False)


def lookup(source: KeySource, env_vars: tuple[str, ...], field: str | None) -> str | None:
    """The key from the explicit file, else the first set variable, else the default file."""
    from_file = source.fields.get(field) if field else None
    if source.explicit and from_file:
        return from_file
    for var in env_vars:
        value = os.environ.get(var)
        if value:
            return value
    return from_file


def missing_key_message(
    provider: str, env_vars: tuple[str, ...], field: str | None, source: KeySource
) -> str:
    how = [f"set the environment variable {' or '.join(env_vars)}"] if env_vars else []
    if field:
        where = str(source.path) if source.path else f"./{DEFAULT_KEYS_FILE} (or a file named by --keys-file)"
        how.append(f"put a {field!r} field in {where}")
    return f"no API key for provider {provider!r}: " + ", or ".join(how)
