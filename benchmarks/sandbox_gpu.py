"""nanogpt on one GPU with and without the bubblewrap sandbox: does the job see its GPU, at the same speed?

    python benchmarks/sandbox_gpu.py --data-dir DIR [--seconds 30] [--repeats 2] [--model d12]

Runs the nanogpt environment's `train_gpt.py` (no torch.compile, so that every run starts alike; the
byte-level Shakespeare shards of `idealab data fetch` under DIR/nanogpt) through `LocalBackend` on GPU 0,
alternating `sandbox="off"` and `sandbox="require"`, and prints the median training tokens/s of each run
(step lines after the first 10) and the ratio. First it checks what a sandboxed job sees of the GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

from idealab.executor.base import JobSpec
from idealab.executor.bwrap import bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool

ENV_DIR = Path(__file__).resolve().parents[1] / "src" / "idealab" / "envs" / "nanogpt"
_STEP = re.compile(r"^step:(\d+) .*tok/s:([\d,]+)", re.MULTILINE)
GPU_PROBE = (
    "python -c \"import torch; print('cuda', torch.cuda.is_available(), torch.cuda.device_count(), "
    "torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')\""
)


async def _job(mode: str, job_id: str, command: str, work: Path, env: dict[str, str], timeout_s: float) -> str:
    backend = LocalBackend(SlotPool([0]), sandbox=mode)
    try:
        spec = JobSpec(job_id, work, command, timeout_s, gpus=1, env=env, log_dir=work.parent / "logs" / job_id)
        result = await backend.wait(await backend.submit(spec))
    finally:
        await backend.close()
    out = result.stdout_path.read_text(errors="replace")
    if result.exit_code != 0:
        err = result.stderr_path.read_text(errors="replace")[-3000:]
        print(f"{job_id} ({mode}) failed: exit {result.exit_code} error {result.error}\n{out[-2000:]}\n{err}")
    return out


def tokens_per_s(stdout: str) -> float | None:
    values = [float(v.replace(",", "")) for step, v in _STEP.findall(stdout) if int(step) >= 10]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="d12")
    args = parser.parse_args()
    os.environ["IDEALAB_DATA_DIR"] = str(args.data_dir.resolve())
    problem = bwrap_problem()
    print(f"bwrap: {problem or 'usable'}", flush=True)
    env = {
        "NANOGPT_DATASET": "shakespeare_bytes", "NANOGPT_MODEL": args.model, "NANOGPT_SEQ_LEN": "1024",
        "NANOGPT_GLOBAL_BATCH": "32768", "NANOGPT_DEVICE_BATCH": "32", "NANOGPT_COMPILE": "0",
        "IDEALAB_BUDGET_S": str(args.seconds), "NANOGPT_VAL_SIZE": "65536", "NCCL_NVLS_ENABLE": "0",
    }  # fmt: skip
    modes = ["off"] if problem else ["off", "require"]
    speeds: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="idealab-gpu-bench-") as tmp:
        work = copy_environment(ENV_DIR, Path(tmp) / "code")
        for mode in modes:
            seen = asyncio.run(_job(mode, f"probe-{mode}", GPU_PROBE, work, {}, 120)).strip()
            print(f"GPU seen by a job, sandbox={mode}: {seen}", flush=True)
        for i in range(args.repeats):
            for mode in modes:
                out = asyncio.run(_job(mode, f"train-{mode}-{i}", "python train_gpt.py", work, env, args.seconds + 240))
                speed = tokens_per_s(out)
                print(f"run {i} sandbox={mode}: median tokens/s {speed}", flush=True)
                if speed is not None:
                    speeds[mode].append(speed)
    if all(speeds.values()) and len(modes) == 2:
        off, on = statistics.median(speeds["off"]), statistics.median(speeds["require"])
        print(f"nanogpt {args.model}, 1 GPU, no compile: tokens/s without sandbox {off:,.0f}, with bwrap "
              f"{on:,.0f}, bwrap/none = {on / off:.3f}")  # fmt: skip
    else:
        sys.exit(f"no comparison: {speeds}")


if __name__ == "__main__":
    main()
