"""Ideators by name. An unknown name fails with the list of valid ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from idealab.ideators.base import Ideator, Implementer
from idealab.ideators.mutate import MutateIdeator
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.store import Store


@dataclass(frozen=True)
class IdeatorOptions:
    """Everything any ideator may need; each builder reads the part it uses."""

    store: Store
    run_id: int
    model: str | None = None
    implementer_model: str | None = None
    base_url: str | None = None
    keys_file: Path | None = None
    max_cost_usd: float | None = None
    batch_size: int = 10
    extra: tuple[tuple[str, str], ...] = ()


Builder = Callable[[IdeatorOptions], tuple[Ideator, Implementer]]


def _mutate(options: IdeatorOptions) -> tuple[Ideator, Implementer]:
    return MutateIdeator(), ReadyDiffImplementer()


BUILDERS: dict[str, Builder] = {"mutate": _mutate}


def register(name: str, builder: Builder) -> None:
    BUILDERS[name] = builder


def build(name: str, options: IdeatorOptions) -> tuple[Ideator, Implementer]:
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
