"""Shared helpers for the GRPO environment tests (no tests here)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

from idealab.paths import builtin_envs_dir

ENV_DIR = builtin_envs_dir() / "grpo"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data of the repo
ENV_MODULES = ("grpo", "rollout", "evaluate", "grader", "data", "harness")


def load_env_modules(env_dir: Path) -> SimpleNamespace:
    """Import the environment's modules from env_dir (fresh: a copy's edits are what gets loaded)."""
    for name in ENV_MODULES:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(env_dir))
    try:
        return SimpleNamespace(**{name: importlib.import_module(name) for name in ENV_MODULES})
    finally:
        sys.path.remove(str(env_dir))
        for name in ENV_MODULES:  # leave no module named "evaluate" behind for other tests
            sys.modules.pop(name, None)


def tiny_tokenizer():  # type: ignore[no-untyped-def]
    """A real word-level fast tokenizer over a few letters (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "a", "b", "c", "d", "e"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
