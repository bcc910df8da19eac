"""Running jobs: the backend interface, the local backend, slots, sandboxing and outcome judging.

The names below are imported lazily (on first use), because every job starts a small supervisor process
with `python -m idealab.executor.supervisor`, which imports this package: it must stay cheap to import.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing is a cost every job would pay
if TYPE_CHECKING:
    from typing import Any

    from idealab.executor.base import Backend, JobResult, JobSpec, JobStart, OnStart
    from idealab.executor.gpus import choose_gpu_ids, detect_gpu_ids, parse_gpu_list
    from idealab.executor.local import LocalBackend
    from idealab.executor.procs import kill_stale_job
    from idealab.executor.runner import Outcome, classify, job_spec, protected_hashes, run_job
    from idealab.executor.sandbox import copy_environment, hash_files, job_environment, scrubbed_environ
    from idealab.executor.slots import Lease, SlotPool

_HOMES = {
    "base": ("Backend", "JobResult", "JobSpec", "JobStart", "OnStart"),
    "gpus": ("choose_gpu_ids", "detect_gpu_ids", "parse_gpu_list"),
    "local": ("LocalBackend",),
    "procs": ("kill_stale_job",),
    "runner": ("Outcome", "classify", "job_spec", "protected_hashes", "run_job"),
    "sandbox": ("copy_environment", "hash_files", "job_environment", "scrubbed_environ"),
    "slots": ("Lease", "SlotPool"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "Backend",
    "JobResult",
    "JobSpec",
    "JobStart",
    "Lease",
    "LocalBackend",
    "OnStart",
    "Outcome",
    "SlotPool",
    "choose_gpu_ids",
    "classify",
    "copy_environment",
    "detect_gpu_ids",
    "hash_files",
    "job_environment",
    "job_spec",
    "kill_stale_job",
    "parse_gpu_list",
    "protected_hashes",
    "run_job",
    "scrubbed_environ",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
