"""Where idealab keeps data that set-up fetches once (never from a hub at run time)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_VAR = "IDEALAB_DATA_DIR"


def data_dir() -> Path:
    """Offline data root: $IDEALAB_DATA_DIR, else $XDG_CACHE_HOME/idealab, else ~/.cache/idealab."""
    explicit = os.environ.get(DATA_DIR_VAR)
    if explicit:
        return Path(explicit).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache) / "idealab").resolve()


def builtin_envs_dir() -> Path:
    return Path(__file__).resolve().parent / "envs"
