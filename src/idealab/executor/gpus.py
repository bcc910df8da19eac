"""Which GPU ids the local backend may use: detected with nvidia-smi, or given as `--gpus 0,1,3`."""

from __future__ import annotations

import shutil
import subprocess

NVIDIA_SMI_QUERY = ("--query-gpu=index", "--format=csv,noheader")


def detect_gpu_ids(timeout_s: float = 20.0) -> list[int]:
    """GPU indices reported by `nvidia-smi`; an empty list when it is absent, fails or says nonsense."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run(
            [exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []  # a broken driver install means "no usable GPUs", not a crash of the orchestrator
    if done.returncode != 0:
        return []
    ids: list[int] = []
    for line in done.stdout.splitlines():
        text = line.strip()
        if not text:
            continue
        if not text.isdigit():
            return []
        ids.append(int(text))
    return sorted(set(ids))


def parse_gpu_list(text: str) -> list[int]:
    """Parse `0,1,3` (spaces allowed) into distinct non-negative ids, in the order given."""
    if not text.strip():
        raise ValueError("--gpus: expected a comma-separated list of GPU ids such as '0,1,3', got ''")
    ids: list[int] = []
    for item in text.split(","):
        token = item.strip()
        if not token:
            raise ValueError(f"--gpus: empty item in {text!r} (expected e.g. '0,1,3')")
        if not token.isdigit():
            raise ValueError(f"--gpus: {token!r} in {text!r} is not a GPU id (a non-negative integer)")
        gpu = int(token)
        if gpu in ids:
            raise ValueError(f"--gpus: GPU {gpu} is listed twice in {text!r}")
        ids.append(gpu)
    return ids


def choose_gpu_ids(requested: str | None) -> list[int]:
    """The explicit `--gpus` list when given, else every GPU nvidia-smi reports (maybe none)."""
    return parse_gpu_list(requested) if requested is not None else detect_gpu_ids()
