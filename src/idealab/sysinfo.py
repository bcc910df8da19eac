"""The machine and software a run started on, stored with the run so that reports can name them."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
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


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo; elsewhere what the platform reports)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass  # not Linux: the platform's word for it
    return platform.processor() or platform.machine()


def hardware_identity(gpu_ids: Sequence[int], gpus_per_job: int) -> dict[str, Any]:
    """What sets a job's speed, and so its result under a fixed time budget: the model and number of the
    GPUs a job gets, or for a job without GPUs the CPU model and the threads it may use. Two runs whose
    identities are equal may share a measured baseline (`idealab run --reuse-baseline`)."""
    if gpus_per_job > 0:
        listed = {int(i): name for i, name, *_ in (line.split(", ") for line in gpu_names()) if i.isdigit()}
        models = sorted({listed.get(i, "unknown") for i in gpu_ids})
        return {"gpu_models": models, "gpus_per_job": gpus_per_job}
    return {"cpu_model": cpu_model(), "cpu_threads": len(os.sched_getaffinity(0))}


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
