"""Run options: the environment's suggested search size, and the schedule and concurrency flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from idealab.manifest import load_manifest, resolve_env
from idealab.runconfig import RunOptions, env_defaults, resolve_run_options
from idealab.store import Store


def _resolve(tmp_path: Path, env: str, **given: object):  # type: ignore[no-untyped-def]
    store = Store.open(tmp_path / "w")
    try:
        defaults = env_defaults(load_manifest(resolve_env(env)))
        return resolve_run_options(store.get_run(), RunOptions(env=env, **given), defaults)
    finally:
        store.close()


def test_ideas_per_epoch_defaults_to_the_environments(tmp_path: Path) -> None:
    assert _resolve(tmp_path, "grpo").ideas_per_epoch == 50  # the paper's GRPO search
    assert _resolve(tmp_path, "nanogpt").ideas_per_epoch == 80
    assert _resolve(tmp_path, "grpo", ideas_per_epoch=20).ideas_per_epoch == 20  # the command line wins


def test_schedule_history_and_concurrency_reach_the_search(tmp_path: Path) -> None:
    settings = _resolve(tmp_path, "grpo", exploit_start=0.3, exploit_step=0.2, exploit_every=1, exploit_cap=0.7,
                        exploit_round_to=5, history_sample=7, implement_concurrency=3)
    config = settings.search_config()
    assert (config.history_sample, config.implement_concurrency) == (7, 3)
    assert config.schedule.split(1, 50) == (25, 25)  # 0.5 * 50, a multiple of 5
    assert config.schedule.split(5, 50) == (35, 15)  # capped at 0.7
    defaults = _resolve(tmp_path, "grpo").search_config()
    assert defaults.schedule.split(1, 50) == (20, 30)  # released code: 25 rounded down to a multiple of 10


def test_invalid_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _resolve(tmp_path, "grpo", history_sample=0)
    with pytest.raises(ValueError):
        _resolve(tmp_path, "grpo", exploit_cap=1.5)


def test_the_flags_are_on_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "idealab", "run", "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
    assert done.returncode == 0, done.stderr
    for flag in ("--exploit-start", "--exploit-step", "--exploit-every", "--exploit-cap", "--exploit-round-to",
                 "--history-sample", "--implement-concurrency"):
        assert flag in done.stdout, flag
