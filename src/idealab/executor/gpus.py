"""Which GPU ids the local backend may use.

GPU ids are the numbers a job's CUDA_VISIBLE_DEVICES is set to. Without any setting they are the indices
nvidia-smi reports (every GPU of the machine). When the user has already set CUDA_VISIBLE_DEVICES, only
those GPUs are used, in the user's own numbering (`CUDA_VISIBLE_DEVICES=2,3` gives the ids 2 and 3, and a
job leased GPU 3 runs with `CUDA_VISIBLE_DEVICES=3`); `--gpus` then picks among them with the same numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

NVIDIA_SMI_QUERY = ("--query-gpu=index", "--format=csv,noheader")
VISIBLE_DEVICES_VAR = "CUDA_VISIBLE_DEVICES"


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


def visible_gpu_ids(environ: Mapping[str, str] | None = None) -> list[int] | None:
    """The GPUs an already-set CUDA_VISIBLE_DEVICES allows, in its order; None when it is not set.

    Read as CUDA reads it: the list ends at the first entry that is not an index ("-1" is the usual way
    to hide every GPU), and an empty value means no GPU. Entries that name GPUs by UUID or MIG instance
    cannot become the indices a job is given, so they are an error rather than silently ignored.
    """
    value = (os.environ if environ is None else environ).get(VISIBLE_DEVICES_VAR)
    if value is None:
        return None
    ids: list[int] = []
    for item in value.split(","):
        token = item.strip()
        if not token.isdigit():
            if token.upper().startswith(("GPU-", "MIG-")):
                raise ValueError(
                    f"{VISIBLE_DEVICES_VAR}={value!r} names GPUs by UUID; idealab needs GPU indices "
                    f"(as nvidia-smi numbers them), e.g. {VISIBLE_DEVICES_VAR}=0,1"
                )
            break
        if int(token) not in ids:
            ids.append(int(token))
    return ids


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


def choose_gpu_ids(requested: str | None, environ: Mapping[str, str] | None = None) -> list[int]:
    """The GPUs a run may use: the `--gpus` list if given, else every visible GPU (maybe none).

    Visible means the ids of an already-set CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi reports. An
    explicit list must stay inside a set CUDA_VISIBLE_DEVICES: the user hid the other GPUs on purpose.
    """
    visible = visible_gpu_ids(environ)
    if requested is None:
        return visible if visible is not None else detect_gpu_ids()
    ids = parse_gpu_list(requested)
    if visible is not None:
        hidden = [gpu for gpu in ids if gpu not in visible]
        if hidden:
            allowed = ",".join(map(str, visible)) or "none"
            raise ValueError(
                f"--gpus: GPU(s) {','.join(map(str, hidden))} not visible: {VISIBLE_DEVICES_VAR} allows {allowed}"
            )
    return ids
