"""The run database (SQLite, WAL, Alembic migrations): `Store.open(workdir)` and the records it returns;
`RunReader.open(workdir)` (idealab.store.reader) to only read a run, without SQLAlchemy.

`Store` and `UNSET` are loaded on first use: the records and errors are light, and a read-only command
that never writes should not import SQLAlchemy and its ORM to name them (tests/test_lazy_imports.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idealab.store.records import (
    CodeChangeRecord,
    IdeaRecord,
    IdeaSummary,
    JobEnd,
    JobRecord,
    JobSummary,
    LLMCallRecord,
    LLMCallSummary,
    RunRecord,
)
from idealab.store.schema import DB_NAME, StoreBusy, StoreError

if TYPE_CHECKING:
    from idealab.store.store import UNSET, Store

__all__ = [
    "DB_NAME",
    "UNSET",
    "CodeChangeRecord",
    "IdeaRecord",
    "IdeaSummary",
    "JobEnd",
    "JobRecord",
    "JobSummary",
    "LLMCallRecord",
    "LLMCallSummary",
    "RunRecord",
    "Store",
    "StoreBusy",
    "StoreError",
]


def __getattr__(name: str) -> Any:
    if name in ("Store", "UNSET"):
        from idealab.store import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
