"""`python crashpoint.py MODULE.BACKEND_CLASS idealab-arguments...`: idealab's command line, with the named
backend's `submit` changed so that the process SIGKILLs itself the moment its first job exists in the engine
(spawned, accepted by sbatch, accepted by Ray) and before anything could store that job's handle: the
orchestrator's worst moment to die. The backend itself is the real one."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any


def die(_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    module, _, name = sys.argv[1].rpartition(".")
    backend: Any = getattr(importlib.import_module(module), name)
    submit = backend.submit

    async def submit_then_die(self: Any, spec: Any, on_start: Any = None) -> str:
        return await submit(self, spec, die)  # type: ignore[no-any-return]

    backend.submit = submit_then_die
    sys.argv = ["idealab", *sys.argv[2:]]
    from idealab.cli import app

    app()


if __name__ == "__main__":
    main()
