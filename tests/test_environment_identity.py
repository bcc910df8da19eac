"""A run records its environment's identity, and a resume in a changed world is refused, naming the change."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

QUAD = Path(__file__).parent / "envs" / "quad"


def idealab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idealab", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def start(workdir: Path, env: str, cwd: Path | None = None, *more: str) -> subprocess.CompletedProcess[str]:
    return idealab(
        "run", "--env", env, "--epochs", "1", "--ideas-per-epoch", "1", "--workdir", str(workdir), "--quiet", *more,
        cwd=cwd,
    )


def stored_config(workdir: Path) -> dict:
    with sqlite3.connect(workdir / "idealab.db") as conn:
        (config,) = conn.execute("SELECT config FROM runs").fetchone()
    return json.loads(config)


def two_envs(tmp_path: Path) -> tuple[Path, Path]:
    """Directories a/ and b/, each holding an `env` (b's with another starting X)."""
    for side in ("a", "b"):
        shutil.copytree(QUAD, tmp_path / side / "env")
    train = tmp_path / "b" / "env" / "train.py"
    train.write_text(train.read_text().replace("X = 0.5", "X = 0.4"))
    return tmp_path / "a", tmp_path / "b"


def test_a_relative_env_resolved_from_another_directory_is_refused(tmp_path: Path) -> None:
    a, b = two_envs(tmp_path)
    workdir = tmp_path / "run"
    assert start(workdir, "env", a).returncode == 0
    again = idealab("run", "--env", "env", "--workdir", str(workdir), "--epochs", "2", "--quiet", cwd=b)
    assert again.returncode == 2
    message = " ".join(again.stderr.split())
    assert f"the environment is {b / 'env'}; the run's is {a / 'env'}" in message
    assert "files changed since the run started: train.py" in message
    assert "Traceback" not in again.stderr


def test_a_resume_without_env_takes_the_runs_own_directory(tmp_path: Path) -> None:
    a, b = two_envs(tmp_path)
    workdir = tmp_path / "run"
    assert start(workdir, "env", a).returncode == 0
    again = idealab("run", "--workdir", str(workdir), "--epochs", "2", "--quiet", cwd=b)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(workdir / "idealab.db") as conn:
        assert conn.execute("SELECT count(*) FROM ideas WHERE epoch = 1").fetchone() == (1,)
    assert stored_config(workdir)["environment"]["root"] == str(a / "env")


def test_an_edited_manifest_is_refused_naming_the_field(tmp_path: Path) -> None:
    env = tmp_path / "env"
    shutil.copytree(QUAD, env)
    workdir = tmp_path / "run"
    assert start(workdir, str(env)).returncode == 0
    manifest = env / "idealab.toml"
    manifest.write_text(manifest.read_text().replace('goal = "minimize"', 'goal = "maximize"'))
    again = idealab("run", "--workdir", str(workdir), "--epochs", "2", "--quiet")
    assert again.returncode == 2
    message = " ".join(again.stderr.split())
    assert "manifest metric.goal: 'minimize' when the run started, now 'maximize'" in message
    assert "files changed since the run started: idealab.toml" in message


def test_an_added_file_is_refused_and_restoring_the_environment_lets_the_run_go_on(tmp_path: Path) -> None:
    env = tmp_path / "env"
    shutil.copytree(QUAD, env)
    workdir = tmp_path / "run"
    assert start(workdir, str(env)).returncode == 0
    (env / "helper.py").write_text("VALUE = 1\n")
    again = idealab("run", "--workdir", str(workdir), "--epochs", "2", "--quiet")
    assert again.returncode == 2 and "files added since the run started: helper.py" in again.stderr
    (env / "helper.py").unlink()
    assert idealab("run", "--workdir", str(workdir), "--epochs", "2", "--quiet").returncode == 0


def test_the_git_commit_and_dirty_state_are_recorded(tmp_path: Path) -> None:
    env = tmp_path / "env"
    shutil.copytree(QUAD, env)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-C", str(env)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "env"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (env / "notes.txt").write_text("uncommitted\n")
    workdir = tmp_path / "run"
    assert start(workdir, str(env)).returncode == 0
    identity = stored_config(workdir)["environment"]
    assert identity["git"] == {"repository": str(env), "commit": commit, "dirty": True}
    assert identity["root"] == str(env) and len(identity["content_sha256"]) == 64
    assert set(identity["files"]) == {"idealab.toml", "score.py", "train.py", "notes.txt"}  # no .git


def test_the_same_directory_named_another_way_resumes(tmp_path: Path) -> None:
    a, _ = two_envs(tmp_path)
    workdir = tmp_path / "run"
    assert start(workdir, "env", a).returncode == 0
    again = idealab("run", "--env", str(a / "env"), "--workdir", str(workdir), "--epochs", "2", "--quiet")
    assert again.returncode == 0, again.stderr
