"""The entrypoint of a Ray job: `python -m idealab.executor.ray_worker`, run by Ray on a cluster node.

Ray starts it in the job's unpacked working directory (the experiment's copy, shipped by the Ray
backend) with the request in IDEALAB_RAY_REQUEST. It runs the job exactly as the local backend does, under
idealab's own supervisor (time limit with grace, capped logs, metric stream, exit record, sandbox), then
prints what the orchestrator needs back as one line of the job's Ray log:

- `IDEALAB-RAY-START {json}` as soon as the job starts: the GPUs Ray gave it (CUDA_VISIBLE_DEVICES), the
  node, the start time;
- `IDEALAB-RAY-RESULT <base64(zlib(json))>` at the end: the exit record, the logs and metric values, and
  the content of any protected file the job changed (so the orchestrator's tamper check sees it).

Ray caches an unpacked working directory by content and shares it between jobs with the same files (three
baseline runs are the same files), so the job runs in a private copy of it, removed at the end. The job's
environment is built here from the node's own environment through the same allow-list as a local job
(PATH, CUDA and the rest fit the node), plus the variables the request carries (the manifest's `run.env`
and the names it explicitly allows): nothing else of the orchestrator's environment travels, and nothing
else of the node's (a KubeRay pod's cloud credentials, say) reaches the job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import zlib
from pathlib import Path

from idealab.executor.bwrap import Limits, SandboxPolicy, job_home, sandbox_wrapper, use_sandbox
from idealab.executor.sandbox import COPY_IGNORE, job_environment
from idealab.executor.supervisor import (
    METRICS_NAME,
    STDERR_NAME,
    STDOUT_NAME,
    SUPERVISOR_LOG_NAME,
    ExitRecord,
    SupervisorSpec,
    supervise,
)

REQUEST_VAR = "IDEALAB_RAY_REQUEST"
START_MARK = "IDEALAB-RAY-START "
RESULT_MARK = "IDEALAB-RAY-RESULT "
SHIPPED_FILES = (STDOUT_NAME, STDERR_NAME, METRICS_NAME, SUPERVISOR_LOG_NAME)


def encode(payload: dict[str, object]) -> str:
    return base64.b64encode(zlib.compress(json.dumps(payload).encode(), 6)).decode()


def decode(text: str) -> dict[str, object]:
    value = json.loads(zlib.decompress(base64.b64decode(text)))
    if not isinstance(value, dict):
        raise ValueError("a result bundle is not a JSON object")
    return value


def _b64(path: Path) -> str | None:
    return base64.b64encode(path.read_bytes()).decode() if path.is_file() else None


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _gpu_ids() -> list[int]:
    """The GPUs Ray assigned to this job (it sets CUDA_VISIBLE_DEVICES to their indices)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(part) for part in raw.split(",") if part.strip().isdigit()]


def _policy(request: dict[str, object]) -> SandboxPolicy:
    sandbox = request["sandbox"]
    assert isinstance(sandbox, dict)
    return SandboxPolicy(
        network=bool(sandbox["network"]),
        allow_env=tuple(sandbox["allow_env"]),
        readonly=tuple(sandbox["readonly"]),
        limits=Limits(**sandbox["limits"]),
        mode=sandbox["mode"],
    )


def run(request: dict[str, object], unpacked: Path) -> dict[str, object]:
    """Run the requested job in a private copy of `unpacked`; what goes back to the orchestrator."""
    job_id = str(request["job_id"])
    safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)
    root = Path(tempfile.mkdtemp(prefix=f"idealab-ray-{safe_id}-"))
    try:
        workspace, job_dir = root / "workspace", root / "job"
        shutil.copytree(unpacked, workspace, symlinks=True, ignore=shutil.ignore_patterns(*COPY_IGNORE))
        job_dir.mkdir()
        policy = _policy(request)
        before = {rel: _digest(workspace / rel) for rel in policy.readonly}
        record = _supervised(request, policy, workspace, job_dir)
        changed = {rel: _b64(workspace / rel) for rel, digest in before.items() if _digest(workspace / rel) != digest}
        files = {name: _b64(job_dir / name) for name in SHIPPED_FILES}
        return {"exit": vars(record), "files": files, "protected": changed}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _supervised(request: dict[str, object], policy: SandboxPolicy, workspace: Path, job_dir: Path) -> ExitRecord:
    job_id = str(request["job_id"])
    gpu_ids = _gpu_ids()
    started = {"gpu_ids": gpu_ids, "node": socket.gethostname(), "started_at": time.time()}
    print(START_MARK + json.dumps(started), flush=True)
    sandboxed, problem = use_sandbox(policy.mode or "auto")
    if problem is not None:
        now = time.time()
        record = ExitRecord(job_id, now, now, None, "error", problem)
        record.write(job_dir)
        return record
    env_extra = request["env"]
    assert isinstance(env_extra, dict)
    base = {k: v for k, v in os.environ.items() if k != REQUEST_VAR}
    home = job_home(job_dir, sandboxed)
    env = job_environment(env_extra, gpu_ids, job_id, base, policy.allow_env, home)
    # the disk cap covers the job's copy, and its HOME outside the sandbox (inside, the private /tmp is a
    # tmpfs of the cap's size), as for a local job
    disk_mb = policy.limits.disk_mb
    disk_paths = [] if disk_mb is None else [str(workspace)] if sandboxed else [str(workspace), home]
    wrapper = sandbox_wrapper(policy, workspace, job_dir, gpu_ids, sandboxed)
    SupervisorSpec(
        job_id=job_id,
        command=str(request["command"]),
        cwd=str(workspace),
        timeout_s=float(request["timeout_s"]),  # type: ignore[arg-type]
        grace_s=float(request["grace_s"]),  # type: ignore[arg-type]
        log_cap_bytes=int(request["log_cap_bytes"]),  # type: ignore[call-overload]
        metric_name=request["metric_name"],  # type: ignore[arg-type]
        metric_regex=request["metric_regex"],  # type: ignore[arg-type]
        max_metric_values=int(request["max_metric_values"]),  # type: ignore[call-overload]
        wrapper=wrapper,
        sandboxed=sandboxed,
        max_processes=policy.limits.processes,
        max_disk_mb=disk_mb,
        disk_paths=disk_paths,
    ).write(job_dir)
    # the supervisor hands its own environment to the job, as the local backend's does
    os.environ.clear()
    os.environ.update(env)
    return supervise(job_dir)


def main() -> int:
    raw = os.environ.pop(REQUEST_VAR, None)
    if raw is None:
        print(f"idealab ray worker: {REQUEST_VAR} is not set (it runs only as idealab's Ray job)", file=sys.stderr)
        return 2
    bundle = run(json.loads(raw), Path.cwd())
    print(RESULT_MARK + encode(bundle), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
