"""A real single-node Ray cluster for the Ray backend's tests, started and stopped by the test itself.

Where Ray cannot start, the tests skip with the reason, unless IDEALAB_REQUIRE_CLUSTERS=1 (CI).
`ray stop` stops every Ray cluster of the machine, so it is never used: the head is started in a session
of its own (every process Ray starts stays in it), with its own temp dir and free ports on loopback, and
is stopped by signalling exactly the processes of that session. Two fake GPUs are declared
(`--num-gpus 2`): Ray's accounting hands them out and sets CUDA_VISIBLE_DEVICES, no device needed.
The nodes' `python` is this interpreter (its bin directory first on PATH), as a real cluster's nodes run
`ray start` from the environment that has the training code's packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REQUIRE_VAR = "IDEALAB_REQUIRE_CLUSTERS"  # "1" (CI): a cluster that cannot start fails the tests
NODE_SECRET = "node-secret-value"
START_TIMEOUT_S = 240  # a loaded 2-core machine takes a while to bring up Ray's dozen processes


@dataclass
class RayCluster:
    address: str  # the dashboard (Jobs API), http://127.0.0.1:PORT
    session: int  # the session id of every process of this cluster
    temp_dir: Path

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            members = session_members(self.session)
            for pid in members:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            while session_members(self.session) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def session_members(sid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            found.append(int(entry.name))
    return found


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_cluster() -> tuple[RayCluster | None, str]:
    """A running cluster, or None and why Ray cannot start here."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return None, f"ray is not installed ({exc}): pip install -r requirements-ray.txt"
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        return None, f"no ray command beside {sys.executable}"
    temp_dir = Path(tempfile.mkdtemp(prefix="idealab-raytest-", dir="/tmp"))  # short: Ray's socket paths
    gcs, dashboard, agent, agent_grpc, metrics, runtime_env, client, manager, objects = _free_ports(9)
    argv = [
        str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
        "--ray-client-server-port", str(client), "--node-manager-port", str(manager),
        "--object-manager-port", str(objects), "--num-cpus", "2", "--num-gpus", "2",
        "--temp-dir", str(temp_dir), "--include-dashboard", "true", "--disable-usage-stats",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["NODE_SECRET_TOKEN"] = NODE_SECRET  # a credential of the node's (a pod's cloud key): no job may see it
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    log = (temp_dir / "start.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = RayCluster(f"http://127.0.0.1:{dashboard}", proc.pid, temp_dir)
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            JobSubmissionClient(cluster.address).list_jobs()
            return cluster, ""
        except Exception:  # not up yet: the dashboard answers last
            time.sleep(1)
    reason = (temp_dir / "start.log").read_text(errors="replace")[-1500:]
    cluster.stop()
    return None, f"a local Ray cluster did not start within {START_TIMEOUT_S} s: {reason}"
