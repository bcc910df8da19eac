"""The cap on all the disk a job writes (`[run] max_disk_mb`, `--max-disk-mb`), with real jobs filling
the disk: the supervisor stops them with a clear reason, sandboxed or not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from idealab.executor.bwrap import bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.runner import run_job, with_sandbox_options
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.manifest import load_manifest
from idealab.status import Status

QUAD = Path(__file__).parent / "envs" / "quad"
# writes 1 MB files into its copy (one directory per 10), without end: only a limit can stop it
FILL = """\
import os, time
n = 0
while True:
    folder = f"out/{n // 10}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/{n}.bin", "wb") as f:
        f.write(os.urandom(2**20))
        f.flush()
        os.fsync(f.fileno())
    n += 1
    print(f"wrote {n} MB", flush=True)
    time.sleep(0.02)
"""
# a sandboxed job's /tmp is a tmpfs of the cap's size: writing past it fails at once
FILL_TMP = """\
try:
    with open("/tmp/big.bin", "wb") as f:
        for _ in range(64):
            f.write(b"x" * 2**20)
            f.flush()
    print("wrote 64 MB into /tmp")
except OSError as exc:
    print(f"/tmp refused: {exc}")
print("loss: 1.0")
"""


def fill(tmp_path: Path, sandbox: str, script: str, cli_cap: int | None = None, manifest_cap: int | None = 5):
    env = copy_environment(QUAD, tmp_path / "env")
    toml = env / "idealab.toml"
    extra = f"\nmax_disk_mb = {manifest_cap}" if manifest_cap is not None else ""
    toml.write_text(toml.read_text().replace("timeout_s = 30", "timeout_s = 120" + extra))
    manifest = with_sandbox_options(load_manifest(env), max_disk_mb=cli_cap)
    workspace = copy_environment(env, tmp_path / "code")
    (workspace / "train.py").write_text(script)

    async def main():
        backend = LocalBackend(SlotPool.cpu_only(1), sandbox=sandbox)
        try:
            return await run_job(backend, manifest, workspace, "fill", tmp_path / "logs")
        finally:
            await backend.close()

    return asyncio.run(main()), workspace


def written_mb(workspace: Path) -> float:
    return sum(p.stat().st_size for p in (workspace / "out").rglob("*.bin")) / 2**20


def test_a_job_filling_the_disk_is_stopped_with_a_clear_reason(tmp_path: Path) -> None:
    outcome, workspace = fill(tmp_path, "off", FILL)
    assert outcome.status is Status.FAILED and not outcome.result.timed_out
    assert outcome.reason is not None
    assert outcome.reason.startswith("disk limit (5 MB) reached: the job wrote more than 5 MB")
    assert written_mb(workspace) > 5  # it did fill, and was stopped (it never ends by itself)


def test_the_command_line_tightens_the_manifests_cap(tmp_path: Path) -> None:
    outcome, _ = fill(tmp_path, "off", FILL, cli_cap=3, manifest_cap=None)
    assert outcome.status is Status.FAILED
    assert outcome.reason is not None and outcome.reason.startswith("disk limit (3 MB) reached")


@pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap sandbox here: {bwrap_problem()}")
def test_a_sandboxed_job_is_capped_in_its_copy_and_in_its_private_tmp(tmp_path: Path) -> None:
    outcome, _ = fill(tmp_path / "copy", "require", FILL)
    assert outcome.status is Status.FAILED and outcome.reason is not None
    assert outcome.reason.startswith("disk limit (5 MB) reached")
    outcome, _ = fill(tmp_path / "tmp", "require", FILL_TMP)
    stdout = outcome.result.stdout_path.read_text()
    assert "/tmp refused: [Errno 28] No space left on device" in stdout
