"""The run database (SQLite, WAL, Alembic migrations): `Store.open(workdir)` and the records it returns."""

from idealab.store.engine import StoreBusy, StoreError
from idealab.store.models import (
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
from idealab.store.store import DB_NAME, UNSET, Store

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
