"""The entrypoint of a Ray job: `python -m idealab.executor.ray_worker`, run by Ray on a cluster node.

Ray starts it in the job's unpacked working directory (the experiment's copy, shipped by the Ray
backend) with the request in IDEALAB_RAY_REQUEST: the job's spec, its paths moved to the node's own
directories. It runs the job exactly as the local backend does, under idealab's own supervisor (time limit
with grace, capped logs, metric stream, training budget, then the scoring step in its own sandbox, exit
record), then prints what the orchestrator needs back as one line of the job's Ray log:

- `IDEALAB-RAY-START {json}` as soon as the job starts: the GPUs Ray gave it (CUDA_VISIBLE_DEVICES), the
  node, the start time;
- `IDEALAB-RAY-OUTPUT <log name> <base64>` for each piece of the job's output as its supervisor writes it
  (stdout.log, stderr.log, ...), so that the orchestrator, which follows this log, sees the job's progress
  while it runs; at most the log cap of each log goes this way (the rest comes with the result);
- `IDEALAB-RAY-RESULT <base64(zlib(json))>` at the end: the exit record, the logs (the scoring step's too)
  and metric values, the content of any protected file the job changed and of any file scoring changed in
  its directory (so the orchestrator's tamper checks see them).

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
from typing import Any

from idealab.executor.base import Budget, JobSpec, ScoringSpec
from idealab.executor.bwrap import Limits, SandboxPolicy, job_home, sandbox_wrapper, use_sandbox
from idealab.executor.sandbox import COPY_IGNORE, job_environment
from idealab.executor.scoring import artefact_dir, scoring_dir, supervisor_score_step
from idealab.executor.supervision import disk_watch, supervisor_spec
from idealab.executor.supervisor import (
    METRICS_NAME,
    SCORE_STDERR_NAME,
    SCORE_STDOUT_NAME,
    STDERR_NAME,
    STDOUT_NAME,
    SUPERVISOR_LOG_NAME,
    ExitRecord,
    supervise,
)
from idealab.paths import DATA_DIR_VAR

REQUEST_VAR = "IDEALAB_RAY_REQUEST"
START_MARK = "IDEALAB-RAY-START "
RESULT_MARK = "IDEALAB-RAY-RESULT "
OUTPUT_MARK = "IDEALAB-RAY-OUTPUT "
SHIPPED_FILES = (STDOUT_NAME, STDERR_NAME, METRICS_NAME, SUPERVISOR_LOG_NAME, SCORE_STDOUT_NAME, SCORE_STDERR_NAME)
UPLOAD_WORKSPACE = "workspace"  # a job with a scoring step uploads these two directories (see `run`)
UPLOAD_SCORING = "scoring"


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


class LiveOutput:
    """The supervisor's echo: each piece of the job's output as an OUTPUT_MARK line of this process's stdout
    (the Ray job's log), at most `cap_bytes` per log file: a job printing without end must not fill the
    node's disk with Ray's copy of it."""

    def __init__(self, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes
        self.sent: dict[str, int] = {}

    def __call__(self, name: str, data: bytes) -> None:
        sent = self.sent.get(name, 0)
        part = data[: max(0, self.cap_bytes - sent)]
        if part:
            self.sent[name] = sent + len(part)
            print(f"{OUTPUT_MARK}{name} {base64.b64encode(part).decode()}", flush=True)


def _gpu_ids() -> list[int]:
    """The GPUs Ray assigned to this job (it sets CUDA_VISIBLE_DEVICES to their indices)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(part) for part in raw.split(",") if part.strip().isdigit()]


def policy_payload(policy: SandboxPolicy) -> dict[str, object]:
    return {
        "network": policy.network, "allow_env": list(policy.allow_env), "readonly": list(policy.readonly),
        "conceal": [str(p) for p in policy.conceal], "limits": vars(policy.limits), "mode": policy.mode,
        "writable": [str(p) for p in policy.writable], "readonly_dirs": [str(p) for p in policy.readonly_dirs],
        "private_data": list(policy.private_data),
    }  # fmt: skip


def spec_payload(spec: JobSpec) -> dict[str, object]:
    """The job's spec as JSON, for the node (paths as the orchestrator knows them: see `node_spec`)."""
    scoring = spec.scoring
    return {
        "job_id": spec.job_id, "workspace": str(spec.workspace), "command": spec.command,
        "timeout_s": spec.timeout_s, "gpus": spec.gpus, "env": dict(spec.env),
        "log_dir": str(spec.log_dir) if spec.log_dir is not None else None,
        "metric_name": spec.metric_name, "metric_regex": spec.metric_regex,
        "sandbox": policy_payload(spec.sandbox),
        "budget": vars(spec.budget) if spec.budget is not None else None,
        "scoring": None if scoring is None else {
            "command": scoring.command, "workspace": str(scoring.workspace), "timeout_s": scoring.timeout_s,
            "env": dict(scoring.env), "unset": list(scoring.unset), "sandbox": policy_payload(scoring.sandbox),
        },
    }  # fmt: skip


def node_spec(payload: dict[str, Any], moves: dict[str, str]) -> JobSpec:
    """The job's spec on the node: every path (and every variable naming one) under a directory of the
    orchestrator's in `moves` (its copy, its log directory) moved to the node's own."""

    def moved(text: str) -> str:
        for old in sorted(moves, key=len, reverse=True):
            if text == old or text.startswith(old.rstrip("/") + "/"):
                return moves[old] + text[len(old) :]
        return text

    def path(text: str) -> Path:
        return Path(moved(text))

    def policy(raw: dict[str, Any]) -> SandboxPolicy:
        return SandboxPolicy(
            network=bool(raw["network"]), allow_env=tuple(raw["allow_env"]), readonly=tuple(raw["readonly"]),
            conceal=tuple(path(p) for p in raw["conceal"]), limits=Limits(**raw["limits"]), mode=raw["mode"],
            writable=tuple(path(p) for p in raw["writable"]),
            readonly_dirs=tuple(path(p) for p in raw["readonly_dirs"]), private_data=tuple(raw["private_data"]),
        )  # fmt: skip

    raw_scoring = payload["scoring"]
    scoring = None
    if raw_scoring is not None:
        scoring = ScoringSpec(
            command=raw_scoring["command"], workspace=path(raw_scoring["workspace"]),
            timeout_s=float(raw_scoring["timeout_s"]), env={k: moved(v) for k, v in raw_scoring["env"].items()},
            unset=tuple(raw_scoring["unset"]), sandbox=policy(raw_scoring["sandbox"]),
        )  # fmt: skip
    return JobSpec(
        job_id=payload["job_id"], workspace=path(payload["workspace"]), command=payload["command"],
        timeout_s=float(payload["timeout_s"]), gpus=int(payload["gpus"]),
        env={k: moved(v) for k, v in payload["env"].items()},
        log_dir=path(payload["log_dir"]) if payload["log_dir"] is not None else None,
        metric_name=payload["metric_name"], metric_regex=payload["metric_regex"],
        sandbox=policy(payload["sandbox"]),
        budget=Budget(**payload["budget"]) if payload["budget"] is not None else None,
        scoring=scoring,
    )  # fmt: skip


def _digests(directory: Path) -> dict[str, str | None]:
    """Every file under `directory`, by its relative path, with its digest."""
    return {
        str(path.relative_to(directory)): _digest(path) for path in sorted(directory.rglob("*")) if path.is_file()
    }


def run(request: dict[str, Any], unpacked: Path) -> dict[str, object]:
    """Run the requested job in a private copy of `unpacked`; what goes back to the orchestrator.

    A job with a scoring step comes as two directories, `workspace` (the copy the training runs in) and
    `scoring` (the fresh scoring directory): the latter goes into the job's own directory, as in the local
    backend's log directory, where the training's sandbox conceals it, beside the empty artefact directory."""
    job_id = str(request["job_id"])
    safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)
    root = Path(tempfile.mkdtemp(prefix=f"idealab-ray-{safe_id}-"))
    try:
        workspace, job_dir = root / "workspace", root / "job"
        scored = request["spec"]["scoring"] is not None
        source = unpacked / UPLOAD_WORKSPACE if scored else unpacked
        shutil.copytree(source, workspace, symlinks=True, ignore=shutil.ignore_patterns(*COPY_IGNORE))
        job_dir.mkdir()
        if scored:
            shutil.copytree(unpacked / UPLOAD_SCORING, scoring_dir(job_dir), symlinks=True)
            artefact_dir(job_dir).mkdir()
        moves = {old: str(workspace) for old in request["workspace"]}
        moves.update({old: str(job_dir) for old in request["log_dir"]})
        spec = node_spec(request["spec"], moves)
        before = {rel: _digest(workspace / rel) for rel in spec.sandbox.readonly}
        scoring_before = _digests(scoring_dir(job_dir)) if scored else {}
        record = _supervised(request, spec, job_dir)
        changed = {rel: _b64(workspace / rel) for rel, digest in before.items() if _digest(workspace / rel) != digest}
        scoring_after = _digests(scoring_dir(job_dir)) if scored else {}
        scoring_changed = {
            rel: _b64(scoring_dir(job_dir) / rel)
            for rel in sorted(set(scoring_before) | set(scoring_after))
            if scoring_before.get(rel) != scoring_after.get(rel)
        }
        files = {name: _b64(job_dir / name) for name in SHIPPED_FILES}
        return {"exit": vars(record), "files": files, "protected": changed, "scoring": scoring_changed}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _supervised(request: dict[str, Any], spec: JobSpec, job_dir: Path) -> ExitRecord:
    job_id = spec.job_id
    gpu_ids = _gpu_ids()
    started = {"gpu_ids": gpu_ids, "node": socket.gethostname(), "started_at": time.time()}
    print(START_MARK + json.dumps(started), flush=True)
    policy = spec.sandbox
    sandboxed, problem = use_sandbox(policy.mode or "auto")
    if problem is not None:
        now = time.time()
        record = ExitRecord(job_id, now, now, None, "error", problem)
        record.write(job_dir)
        return record
    base = {k: v for k, v in os.environ.items() if k != REQUEST_VAR}
    home = job_home(job_dir, sandboxed)
    env = job_environment(spec.env, gpu_ids, job_id, base, policy.allow_env, home)
    if DATA_DIR_VAR in env:  # the sandboxes reveal (and hide the private part of) the job's data directory
        os.environ[DATA_DIR_VAR] = env[DATA_DIR_VAR]
    wrapper = sandbox_wrapper(policy, spec.workspace, job_dir, gpu_ids, sandboxed)
    # the disk cap covers the job's copy, and its HOME outside the sandbox (inside, the private /tmp is a
    # tmpfs of the cap's size), as for a local job
    supervisor_spec(
        spec, wrapper, sandboxed, grace_s=float(request["grace_s"]), log_cap_bytes=int(request["log_cap_bytes"]),
        max_metric_values=int(request["max_metric_values"]), max_processes=policy.limits.processes,
        disk=disk_watch(policy.limits.disk_mb, spec.workspace, job_dir, sandboxed),
        score=supervisor_score_step(spec, job_dir, gpu_ids, sandboxed, policy.limits),
    ).write(job_dir)  # fmt: skip
    # the supervisor hands its own environment to the job, as the local backend's does
    os.environ.clear()
    os.environ.update(env)
    return supervise(job_dir, LiveOutput(int(request["log_cap_bytes"])))


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
