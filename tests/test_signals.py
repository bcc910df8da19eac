"""SIGTERM of `idealab run` while an idea's preflight check runs: the run stops cleanly (exit 143) and
leaves no preflight process behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakeprovider import FakeProvider, Reply
from test_executor_local import wait_gone
from test_llm_e2e import IDEAS, QUAD, SET_X, SET_Y_MALFORMED

PREFLIGHT = """
import os, pathlib, time
pathlib.Path(os.environ["PREFLIGHT_PID_FILE"]).write_text(str(os.getpid()))
time.sleep(600)
"""


@pytest.mark.slow
def test_sigterm_during_a_preflight_leaves_no_orphan(tmp_path: Path, fake_provider: FakeProvider) -> None:
    env_dir = tmp_path / "quad"
    shutil.copytree(QUAD, env_dir)
    pid_file = tmp_path / "preflight.pid"
    (env_dir / "preflight.py").write_text(PREFLIGHT)
    manifest = (env_dir / "idealab.toml").read_text()
    manifest = manifest.replace(
        'env = { QUAD_SLEEP_S = "0.2" }',
        f'env = {{ QUAD_SLEEP_S = "0.2", PREFLIGHT_PID_FILE = "{pid_file}" }}\n'
        'preflight = "python preflight.py"\npreflight_timeout_s = 600',
    )
    (env_dir / "idealab.toml").write_text(manifest)
    fake_provider.add("chat", Reply.answer(IDEAS), Reply.answer(SET_X), Reply.answer(SET_Y_MALFORMED))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "IDEALAB_"))}
    env["IDEALAB_LLM_SAMPLES"] = "1"
    command = [
        sys.executable, "-m", "idealab", "run", "--env", str(env_dir), "--ideator", "llm",
        "--model", "openai:some-model", "--base-url", fake_provider.openai_base_url,
        "--workdir", str(tmp_path / "run"), "--epochs", "1", "--ideas-per-epoch", "2", "--batch-size", "2",
        "--slots", "2", "--quiet",
        # the preflight writes its host pid outside its copy: only without the sandbox (in it, nothing
        # outlives the job's PID namespace: tests/test_sandbox.py)
        "--sandbox", "off",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():  # a preflight is running
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    preflight_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert proc.stderr is not None and "stopped by SIGTERM" in proc.stderr.read().decode()
    assert wait_gone(preflight_pid, timeout_s=1)  # already gone when the orchestrator exited
