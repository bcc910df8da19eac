"""Running an environment's one-time set-up (`run.setup`) and reading what came of it.

The set-up contract (docs/environments.md): exit 0 when the data is ready; exit MISSING_INPUT_EXIT (66,
EX_NOINPUT of sysexits.h) when an input is missing that this machine cannot get (no network, a file the
user must supply), after printing what is missing and how to get it as the last paragraph (after a blank
line) of its stderr; any other failure is a broken
set-up. `idealab data fetch` prepares every environment it can and reports the others without failing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from idealab import paths
from idealab.manifest import Manifest

MISSING_INPUT_EXIT = 66
SHARED_DATA_VAR = "IDEALAB_SHARED_DATA"  # a directory laid out as the project's ../shared/data
DOWNLOAD_VAR = "IDEALAB_DOWNLOAD"  # "1": a set-up may download from outside PyPI (hubs, datasets)
_FAILED_LINES = 12  # the end of a broken set-up's output
_MISSING_LINES = 5  # a missing-input report without a paragraph of its own: its last lines


class SetupStatus(StrEnum):
    READY = "ready"  # the set-up succeeded (or the environment needs none)
    MISSING = "missing"  # an input is missing here; `detail` says how to get it
    FAILED = "failed"  # the set-up broke; `detail` holds the end of its output


@dataclass(frozen=True)
class SetupOutcome:
    env: str
    preset: str | None
    status: SetupStatus
    detail: str  # "" when ready
    duration_s: float

    @property
    def label(self) -> str:
        return f"{self.env} ({self.preset})" if self.preset else self.env


def setup_environ(shared_data: Path | None, download: bool) -> dict[str, str]:
    """A set-up's variables: the user's own (it may need e.g. HF_TOKEN), unlike a job's scrubbed ones."""
    env = dict(os.environ)
    env[paths.DATA_DIR_VAR] = str(paths.data_dir())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if shared_data is not None:
        env[SHARED_DATA_VAR] = str(shared_data.resolve())
    if download:
        env[DOWNLOAD_VAR] = "1"
    return env


def run_setup(
    manifest: Manifest,
    *,
    shared_data: Path | None = None,
    download: bool = False,
    echo: Callable[[str], None] = print,
) -> SetupOutcome:
    """Run `manifest.run.setup` in the environment's directory, passing its output line by line to `echo`.

    What a set-up says on stderr is kept apart: its end is the outcome's detail (what is missing, or the
    traceback), without the progress lines of stdout.
    """
    if manifest.run.setup is None:
        return SetupOutcome(manifest.name, manifest.preset, SetupStatus.READY, "", 0.0)
    started = time.monotonic()
    errors: deque[str] = deque(maxlen=_FAILED_LINES)
    outputs: deque[str] = deque(maxlen=_FAILED_LINES)
    with subprocess.Popen(
        manifest.run.setup,
        shell=True,
        cwd=manifest.root,
        env=setup_environ(shared_data, download),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None  # both are pipes
        # Both pipes are drained at once, so that neither can fill up and stall the set-up.
        reader = threading.Thread(target=_pump, args=(proc.stderr, errors, echo), daemon=True)
        reader.start()
        _pump(proc.stdout, outputs, echo)
        reader.join()
    duration = time.monotonic() - started
    if proc.returncode == 0:
        return SetupOutcome(manifest.name, manifest.preset, SetupStatus.READY, "", duration)
    tail = list(errors or outputs)
    if proc.returncode == MISSING_INPUT_EXIT:
        detail = "\n".join(_last_paragraph(tail)) or f"`{manifest.run.setup}` did not say what is missing"
        return SetupOutcome(manifest.name, manifest.preset, SetupStatus.MISSING, detail, duration)
    detail = f"`{manifest.run.setup}` exited with status {proc.returncode}" + "".join(f"\n{t}" for t in tail)
    return SetupOutcome(manifest.name, manifest.preset, SetupStatus.FAILED, detail, duration)


def _pump(stream: IO[str], keep: deque[str], echo: Callable[[str], None]) -> None:
    for line in stream:
        text = line.rstrip("\n")
        echo(text)
        keep.append(text)


def _last_paragraph(lines: list[str]) -> list[str]:
    """The lines after the last blank one: a set-up's report of what is missing, without the progress
    output (download bars, warnings) it printed before it; the last few lines when there is no blank."""
    blanks = [i for i, line in enumerate(lines) if not line.strip()]
    if blanks and blanks[-1] < len(lines) - 1:
        return lines[blanks[-1] + 1 :]
    return [line for line in lines if line.strip()][-_MISSING_LINES:]
