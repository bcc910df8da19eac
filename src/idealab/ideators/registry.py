"""Ideators by name. An unknown name fails with the list of valid ones.

Entries are lazy: a name maps to the "module:function" of its builder, and the module is imported only
when that ideator is built. So listing or building `mutate` never imports the LLM ideator (and its SDKs),
and the ideators import this module for `IdeatorOptions` and `Built` without this module importing them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only
    from idealab.ideators.base import Ideator, Implementer
    from idealab.llm.service import Recorder


@dataclass(frozen=True)
class IdeatorOptions:
    """Everything any ideator may need; each builder reads the part it uses. Building touches no run:
    it happens before a new run is stored, so a start that fails leaves nothing behind."""

    model: str | None = None
    implementer_model: str | None = None
    base_url: str | None = None
    keys_file: Path | None = None
    max_cost_usd: float | None = None
    batch_size: int = 10
    extra: tuple[tuple[str, str], ...] = ()
    recorder: Recorder | None = None  # where LLM calls are recorded (bound to the run once it is stored)
    spent_usd: float = 0.0  # what a resumed run has spent already
    stored_settings: Mapping[str, Any] | None = None  # a resumed run's settings (`Built.settings`)


@dataclass(frozen=True)
class Built:
    """An ideator and its implementer, and the settings they were built with (stored with the run, never a
    key: a resume compares them with the stored ones)."""

    ideator: Ideator
    implementer: Implementer
    settings: Mapping[str, Any] = field(default_factory=dict)


Builder = Callable[[IdeatorOptions], Built]

# name -> "module:function" of its builder (or the builder itself, for ideators registered at run time)
BUILDERS: dict[str, str | Builder] = {
    "mutate": "idealab.ideators.mutate:build",
    "llm": "idealab.ideators.llm:build",
}


def register(name: str, builder: str | Builder) -> None:
    """Add an ideator: a builder, or its "module:function" to import when the ideator is first built."""
    BUILDERS[name] = builder


def names() -> list[str]:
    return sorted(BUILDERS)


def resolve(name: str) -> Builder:
    """The builder registered under `name`, importing its module now if the entry is lazy."""
    entry = BUILDERS.get(name)
    if entry is None:
        raise ValueError(f"unknown ideator {name!r}; valid: {', '.join(names())}")
    if not isinstance(entry, str):
        return entry
    module_name, _, attr = entry.partition(":")
    builder: Builder = getattr(importlib.import_module(module_name), attr)
    return builder


def build(name: str, options: IdeatorOptions) -> Built:
    return resolve(name)(options)
