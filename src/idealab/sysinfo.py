"""The machine and software a run started on, stored with the run so that reports can name them."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

import idealab

# Packages whose versions change results; recorded when installed, never imported.
PACKAGES = ("torch", "numpy", "transformers", "accelerate", "tiktoken", "openai", "anthropic", "google-genai")


def gpu_names(timeout_s: float = 20.0) -> list[str]:
    """Names of the GPUs nvidia-smi reports (index: name), or none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []  # a broken driver: the report says no GPU was seen, the run itself decides what it needs
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def system_info() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "idealab": idealab.__version__,
        "cpus": os.cpu_count(),
        "gpus": gpu_names(),
        "packages": package_versions(),
    }
