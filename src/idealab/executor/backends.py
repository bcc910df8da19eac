"""The backends a run can use, by name (`idealab run --backend NAME`), and how each is built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from idealab.executor.base import Backend
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.executor.slurm import SlurmBackend, SlurmOptions, missing_commands

BACKEND_NAMES = ("local", "slurm")


@dataclass(frozen=True)
class BackendChoice:
    name: str = "local"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    def __post_init__(self) -> None:
        if self.name not in BACKEND_NAMES:
            raise ValueError(f"--backend: expected one of {', '.join(BACKEND_NAMES)}, got {self.name!r}")
        missing = missing_commands() if self.name == "slurm" else []
        if missing:
            raise ValueError(f"--backend slurm: {', '.join(missing)} not found here; run on a Slurm submit host")

    @property
    def local(self) -> bool:
        """Jobs run on this machine (its GPUs are the pool's); else a cluster decides where."""
        return self.name == "local"


def make_backend(
    choice: BackendChoice, pool: SlotPool, workdir: Path, log_cap_bytes: int, manifest_slurm_options: Sequence[str]
) -> Backend:
    """The run's backend. Jobs never see `workdir` (its database, the other jobs' copies) except their own
    copy and logs. ValueError for a bad setting."""
    if choice.name == "slurm":
        options = replace(choice.slurm, extra=(*manifest_slurm_options, *choice.slurm.extra))
        return SlurmBackend(options, log_cap_bytes=log_cap_bytes, conceal=[workdir])
    return LocalBackend(pool, log_cap_bytes=log_cap_bytes, conceal=[workdir])
