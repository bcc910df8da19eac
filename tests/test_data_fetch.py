"""`idealab data fetch` / `env prepare`: prepare what can be, report per environment what is missing.

Set-ups are real subprocesses; the environments are copies of the toy `quad` with a set-up of their own,
and the real grpo set-up is run against an empty data directory with no shared data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from idealab.envsetup import DOWNLOAD_VAR, MISSING_INPUT_EXIT, SHARED_DATA_VAR

QUAD = Path(__file__).parent / "envs" / "quad"
NEEDS_DOWNLOAD = """
import os, sys
if os.environ.get("IDEALAB_DOWNLOAD") != "1":
    print("progress: 50%", file=sys.stderr)
    print("\\nmissing: corpus.txt; get it with --download", file=sys.stderr)
    sys.exit(66)
"""
READY = "print('made it')\n"
BROKEN = "raise SystemExit('boom')\n"


def env_with_setup(tmp_path: Path, name: str, setup_script: str) -> Path:
    """A copy of quad named `name` whose set-up runs `setup_script`."""
    dest = tmp_path / name
    shutil.copytree(QUAD, dest)
    (dest / "setup_data.py").write_text(setup_script)
    manifest = dest / "idealab.toml"
    text = manifest.read_text().replace('name = "quad"', f'name = "{name}"')
    setup = 'command = "python train.py"\nsetup = "python setup_data.py"'
    manifest.write_text(text.replace('command = "python train.py"', setup))
    return dest


def idealab(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (SHARED_DATA_VAR, DOWNLOAD_VAR)}
    env["IDEALAB_DATA_DIR"] = str(data_dir)
    cmd = [sys.executable, "-m", "idealab", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_fetch_prepares_what_it_can_and_reports_what_is_missing(tmp_path: Path) -> None:
    ready = env_with_setup(tmp_path, "ready", READY)
    needy = env_with_setup(tmp_path, "needy", NEEDS_DOWNLOAD)
    done = idealab("data", "fetch", "--only", str(needy), "--only", str(ready), data_dir=tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert "ready: ready" in done.stdout and "needy: missing" in done.stdout
    assert "corpus.txt; get it with --download" in done.stdout  # what is missing, and how to get it
    assert "progress: 50%" in done.stderr and "progress" not in done.stdout  # the report, not the noise
    assert "made it" in done.stderr  # the set-up's own output is shown as it runs


def test_download_is_passed_to_set_ups(tmp_path: Path) -> None:
    needy = env_with_setup(tmp_path, "needy", NEEDS_DOWNLOAD)
    done = idealab("data", "fetch", "--only", str(needy), "--download", data_dir=tmp_path / "data")
    assert done.returncode == 0 and "needy: ready" in done.stdout, done.stdout + done.stderr


def test_env_prepare_fails_when_its_environment_is_not_ready(tmp_path: Path) -> None:
    needy = env_with_setup(tmp_path, "needy", NEEDS_DOWNLOAD)
    done = idealab("env", "prepare", str(needy), data_dir=tmp_path / "data")
    assert done.returncode == MISSING_INPUT_EXIT and "needy: missing" in done.stdout


def test_a_broken_set_up_fails_the_fetch(tmp_path: Path) -> None:
    broken = env_with_setup(tmp_path, "broken", BROKEN)
    ready = env_with_setup(tmp_path, "ready", READY)
    done = idealab("data", "fetch", "--only", str(broken), "--only", str(ready), data_dir=tmp_path / "data")
    assert done.returncode == 1
    assert "broken: failed" in done.stdout and "exited with status 1" in done.stdout and "boom" in done.stdout
    assert "ready: ready" in done.stdout  # the other environments were still prepared


def test_grpo_without_shared_data_prepares_the_rest_and_names_the_prompt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model = data / "grpo" / "models" / "smollm2-135m-instruct" / "model.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")  # stands for the converted weights, so the set-up downloads nothing
    done = idealab("data", "fetch", "--only", "grpo", data_dir=data)
    assert done.returncode == 0, done.stderr
    assert "grpo (cpu-smoke): missing" in done.stdout
    assert "r1_zero.prompt" in done.stdout and "--shared-data" in done.stdout
    assert (data / "grpo" / "arith" / "test.jsonl").is_file()  # what could be prepared, was
