"""Ideators by name. An unknown name fails with the list of valid ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idealab.ideators.base import Ideator, Implementer
from idealab.ideators.mutate import MutateIdeator
from idealab.ideators.ready import ReadyDiffImplementer

if TYPE_CHECKING:  # the LLM package loads its SDKs: not for a run without an LLM
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


def _mutate(options: IdeatorOptions) -> Built:
    return Built(MutateIdeator(), ReadyDiffImplementer())


BUILDERS: dict[str, Builder] = {"mutate": _mutate}


def register(name: str, builder: Builder) -> None:
    BUILDERS[name] = builder


def build(name: str, options: IdeatorOptions) -> Built:
    if name not in BUILDERS:
        _load_optional()
    if name not in BUILDERS:
        raise ValueError(f"unknown ideator {name!r}; valid: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name](options)


def names() -> list[str]:
    _load_optional()
    return sorted(BUILDERS)


def _load_optional() -> None:
    """Builders that live in modules of their own register themselves on import."""
    try:
        import idealab.ideators.llm  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "idealab.ideators.llm":
            raise
