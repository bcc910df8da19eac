"""The command-line contract, through real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

QUAD = Path(__file__).parent / "envs" / "quad"


def idealab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "idealab", *args], capture_output=True, text=True, timeout=timeout)


def test_env_list_names_the_builtin_environments():
    done = idealab("env", "list")
    assert done.returncode == 0, done.stderr
    for name in ("charlm", "nanogpt", "grpo"):
        assert name in done.stdout


def test_env_check_reports_status_metric_and_duration():
    done = idealab("env", "check", str(QUAD), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "ok"
    assert abs(data["metric"] - 2.04) < 1e-9
    assert data["reason"] is None and data["duration_s"] > 0


def test_env_check_of_an_invalid_manifest_names_file_and_field(tmp_path):
    env = tmp_path / "bad"
    shutil.copytree(QUAD, env)
    manifest = env / "idealab.toml"
    manifest.write_text(manifest.read_text().replace('goal = "minimize"', 'goal = "lower"'))
    done = idealab("env", "check", str(env))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "idealab.toml" in message and "metric.goal" in message and "'minimize' or 'maximize'" in message


def test_run_then_status_json(tmp_path):
    workdir = tmp_path / "run"
    done = idealab(
        "run", "--env", str(QUAD), "--epochs", "2", "--ideas-per-epoch", "3", "--slots", "2",
        "--workdir", str(workdir), "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert "best" in done.stdout and "baseline" in done.stdout
    status = idealab("status", "--workdir", str(workdir), "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    baseline = data["baseline"]  # quad is deterministic: three measured runs, no spread
    assert baseline["values"] == [2.04] * 3 and abs(baseline["mean"] - 2.04) < 1e-9 and baseline["sd"] == 0
    assert baseline["reference"] is None and baseline["source"] == "measured"
    assert data["best"]["metric"] <= baseline["mean"] or not data["best"]["beats_baseline"]
    assert len(data["experiments"]) == 6
    assert data["compute"]["job_hours"] > 0 and data["compute"]["gpu_hours"] == 0 and data["seed"] == 0
    assert data["cost_usd"] == 0
    for e in data["experiments"]:
        assert {"id", "epoch", "idea", "status", "metric", "reason", "started_at", "finished_at"} <= set(e)
        assert e["status"] == "ok" and e["started_at"] and e["finished_at"]
        assert {"trials", "mean", "ci_low", "ci_high", "confirmed", "beats_baseline"} <= set(e)
        assert e["trials"][0]["metric"] == e["metric"] and isinstance(e["trials"][0]["seed"], int)
        # a win is claimed only for a confirmed idea
        assert not e["beats_baseline"] or (e["confirmed"] and len(e["trials"]) == 3)

    again = idealab("run", "--workdir", str(workdir), "--seed", "99", "--quiet")
    assert again.returncode == 2 and "seed" in again.stderr


def test_unknown_environment_lists_builtins(tmp_path):
    done = idealab("run", "--env", "no-such-env", "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2
    assert "charlm" in done.stderr
    assert not (tmp_path / "w").exists()  # nothing created for a run that cannot start


def test_status_of_an_empty_directory_fails_clearly(tmp_path):
    done = idealab("status", "--workdir", str(tmp_path))
    assert done.returncode == 2 and "no idealab run" in done.stderr


def test_llm_ideator_without_a_key_fails_at_start_naming_the_variable(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "IDEALAB_KEYS"))}
    done = subprocess.run(
        [sys.executable, "-m", "idealab", "run", "--env", str(QUAD), "--ideator", "llm",
         "--model", "anthropic:claude-opus-4-5", "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "ANTHROPIC_API_KEY" in done.stderr


def test_unknown_llm_option_is_refused(tmp_path):
    done = idealab(
        "run", "--env", str(QUAD), "--ideator", "llm", "--model", "openai:local",
        "--base-url", "http://127.0.0.1:9/v1", "--llm-option", "bogus=1", "--workdir", str(tmp_path / "w"),
    )
    assert done.returncode == 2
    assert "unknown LLM setting 'bogus'" in done.stderr


def test_env_check_removes_its_temporary_copy(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    done = subprocess.run(
        [sys.executable, "-m", "idealab", "env", "check", str(QUAD), "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok"
    assert list(scratch.iterdir()) == []  # the copy and its logs are gone

    kept = tmp_path / "kept"
    done = idealab("env", "check", str(QUAD), "--json", "--workdir", str(kept))
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)["stdout"]).is_file() and (kept / "code" / "train.py").is_file()


def test_a_non_utf8_manifest_is_a_clear_error_not_a_traceback(tmp_path):
    env = tmp_path / "latin"
    shutil.copytree(QUAD, env)
    manifest = env / "idealab.toml"
    manifest.write_bytes(manifest.read_text().replace("A toy", "Un jouet \xe9").encode("latin-1"))
    done = idealab("env", "check", str(env))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "idealab.toml: not UTF-8 text" in " ".join(done.stderr.split())
