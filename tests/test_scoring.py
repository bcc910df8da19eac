"""The scoring contract (issue 11 parts 1-2) with real processes: training leaves an artefact, a separate
scoring process gives the result, the executor measures and enforces the training budget over the job's
whole process tree, and what only scoring may see stays out of training's reach."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from idealab.executor.bwrap import bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.runner import Outcome, copy_omits, preflight_manifest, run_job
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.manifest import Clock, ManifestError, load_manifest
from idealab.paths import DATA_DIR_VAR
from idealab.status import Status
from jobprocs import job_processes

SCORED = Path(__file__).parent / "envs" / "scored"
PROBLEM = bwrap_problem()
SANDBOXES = [
    pytest.param("require", marks=pytest.mark.skipif(PROBLEM is not None, reason=f"no sandbox: {PROBLEM}")),
    "off",
]
TRUE_LOSS = (0.5 - 0.3) ** 2 + 1.0  # X = 0.5 scored against the private target 0.3


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    (root / "scored").mkdir(parents=True)
    (root / "scored" / "val.txt").write_text("0.3\n")
    (root / "scored" / "train.txt").write_text("training text\n")
    monkeypatch.setenv(DATA_DIR_VAR, str(root))
    return root


def scored_env(tmp_path: Path, train: str | None = None) -> Path:
    """A copy of the toy environment, its train.py replaced by `train` where given."""
    env = tmp_path / "env"
    shutil.copytree(SCORED, env)
    if train is not None:
        (env / "train.py").write_text(textwrap.dedent(train))
    return env


def run_once(env: Path, tmp_path: Path, sandbox: str = "require", preset: str | None = None) -> Outcome:
    manifest = load_manifest(env, preset)
    workspace = copy_environment(env, tmp_path / "code", omit=copy_omits(manifest))

    async def go() -> Outcome:
        backend = LocalBackend(SlotPool.cpu_only(1), sandbox=sandbox, grace_s=2.0)
        try:
            return await asyncio.wait_for(run_job(backend, manifest, workspace, "j1", tmp_path / "logs"), 120)
        finally:
            await backend.close()

    return asyncio.run(go())


def job_alive(job_id: str) -> list[int]:
    """Live processes whose environment names this job."""
    marker = f"IDEALAB_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def started_jobs(db: Path) -> list[tuple[str, str]]:
    """(job key, stdout path) of the run's jobs that have started."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT job_key, stdout_path FROM jobs WHERE started_at IS NOT NULL").fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []


# ------------------------------------------------------------------------------------------------ manifest


def test_the_manifest_reads_score_and_budget_and_presets_override_them() -> None:
    manifest = load_manifest(SCORED)
    assert manifest.score is not None and manifest.score.command == "python score.py"
    assert manifest.score.private_data == ("scored/val.txt",)
    assert manifest.budget is not None and (manifest.budget.seconds, manifest.budget.clock) == (30.0, Clock.CPU)
    tight = load_manifest(SCORED, "tight")
    assert tight.budget is not None and (tight.budget.seconds, tight.budget.grace_s) == (1.0, 1.0)
    assert tight.budget.clock is Clock.CPU  # the rest of the table is the manifest's


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('[budget]\nseconds = 0\n', "budget.seconds"),
        ('[budget]\nseconds = 5\nclock = "gpu"\n', "budget.clock"),
        ('[budget]\nseconds = 5\ngrace_s = -1\n', "budget.grace_s"),
        ('[budget]\nseconds = 500\nclock = "wall"\n', "budget.seconds"),  # past run.timeout_s
        ('[budget]\nseconds = 5\nspeed = 2\n', "budget.speed"),
        ('[score]\ntimeout_s = 5\n', "score.command"),
        ('[score]\ncommand = "python s.py"\ntimeout_s = 0\n', "score.timeout_s"),
        ('[score]\ncommand = "python s.py"\nprivate_data = ["/etc/passwd"]\n', "score.private_data"),
    ],
)
def test_bad_score_or_budget_values_are_named(tmp_path: Path, table: str, field: str) -> None:
    env = tmp_path / "env"
    env.mkdir()
    (env / "train.py").write_text("print(1)\n")
    (env / "idealab.toml").write_text(
        'name = "t"\ndescription = "t"\n[run]\ncommand = "python train.py"\ntimeout_s = 60\n'
        '[metric]\nname = "m"\ngoal = "minimize"\n[files]\neditable = ["train.py"]\n' + table
    )
    with pytest.raises(ManifestError, match=f"'{field}'"):
        load_manifest(env)


# ----------------------------------------------------------------------------------------------- the runs


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_the_result_comes_from_scoring_not_from_a_training_metric_line(
    tmp_path: Path, data: Path, sandbox: str
) -> None:
    env = scored_env(tmp_path, """
        import json
        import lib
        X = 0.5
        if __name__ == "__main__":
            lib.save_artefact(X)
            print("@metric " + json.dumps({"name": "loss", "value": 0.001}))  # a made-up score
    """)
    outcome = run_once(env, tmp_path, sandbox)
    assert outcome.status is Status.OK, outcome.reason
    assert outcome.metric == pytest.approx(TRUE_LOSS)
    progress = [v for v in outcome.values if v.source == "progress"]
    assert [v.value for v in progress] == [0.001]  # kept, as progress only


def test_a_training_line_of_an_exclusive_metric_is_a_forged_claim(tmp_path: Path, data: Path) -> None:
    """`[score] exclusive_metric`: the metric is the scorer's alone, so training that prints it is tampering."""
    env = scored_env(tmp_path, """
        import json
        import lib
        X = 0.5
        if __name__ == "__main__":
            lib.save_artefact(X)
            print("@metric " + json.dumps({"name": "lo" + "ss", "value": 0.001}))  # a made-up score
            print("@metric " + json.dumps({"name": "grad_norm", "value": 3.0}))  # other progress is fine
    """)
    manifest = env / "idealab.toml"
    manifest.write_text(manifest.read_text().replace('command = "python score.py"\n',
                                                     'command = "python score.py"\nexclusive_metric = true\n'))
    outcome = run_once(env, tmp_path, "off")
    assert outcome.status is Status.TAMPERED
    assert outcome.reason is not None and "reported the scored metric itself (loss = 0.001)" in outcome.reason
    honest = scored_env(tmp_path / "honest")
    manifest = honest / "idealab.toml"
    manifest.write_text(manifest.read_text().replace('command = "python score.py"\n',
                                                     'command = "python score.py"\nexclusive_metric = true\n'))
    assert run_once(honest, tmp_path / "honest", "off").status is Status.OK


@pytest.mark.skipif(PROBLEM is not None, reason=f"no sandbox: {PROBLEM}")
def test_hidden_files_and_private_data_are_out_of_trainings_reach_but_not_scorings(
    tmp_path: Path, data: Path
) -> None:
    env = scored_env(tmp_path, """
        import json, os
        import lib
        X = 0.5
        def readable(path):
            try:
                open(path).read()
                return True
            except OSError:
                return False
        if __name__ == "__main__":
            lib.save_artefact(X)
            print(json.dumps({
                "hidden_here": os.path.exists("score.py"),
                "val": readable(lib.data("val.txt")),
                "train": readable(lib.data("train.txt")),
            }))
    """)
    outcome = run_once(env, tmp_path)
    assert outcome.status is Status.OK, outcome.reason  # the scorer read val.txt
    assert outcome.metric == pytest.approx(TRUE_LOSS)
    seen = json.loads(outcome.result.stdout_path.read_text())
    assert seen == {"hidden_here": False, "val": False, "train": True}


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_forked_child_burning_cpu_counts_and_the_tree_is_killed_over_budget(
    tmp_path: Path, data: Path, sandbox: str
) -> None:
    env = scored_env(tmp_path, """
        import os, signal, time
        import lib
        X = 0.5
        if __name__ == "__main__":
            signal.signal(signal.SIGUSR1, lambda *_: None)  # the warning is ignored
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:  # a daemon outside the group burns the CPU time
                    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
                    while True:
                        pass
                os._exit(0)
            os.wait()
            lib.save_artefact(X)
            time.sleep(3600)  # the main process itself uses next to no CPU time
    """)
    outcome = run_once(env, tmp_path, sandbox, preset="tight")
    assert outcome.status is Status.TIMEOUT
    assert outcome.reason is not None and "over its training budget (1 s of cpu time)" in outcome.reason
    assert outcome.result.training_s is not None and outcome.result.training_s >= 2.0  # budget + grace
    assert [v.value for v in outcome.values if v.name == "training_s"] == [outcome.result.training_s]
    assert outcome.result.scoring is None  # no scoring after a budget kill
    assert job_alive("j1") == []


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_daemon_left_by_training_is_gone_before_scoring_starts(tmp_path: Path, data: Path, sandbox: str) -> None:
    """A double-forked, setsid daemon that sleeps through training (no CPU time to count) and then keeps
    rewriting the artefact with the perfect X: alive while the scorer reads it, it would make the score."""
    env = scored_env(tmp_path, """
        import json, os, time
        from pathlib import Path
        import lib
        X = 0.5
        if __name__ == "__main__":
            lib.save_artefact(X)
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    artefact = Path(os.environ["IDEALAB_OUTPUT_DIR"], "model.json")
                    time.sleep(0.5)  # training has ended by now
                    for _ in range(3000):  # 30 s: the perfect X, again and again
                        try:
                            artefact.write_text(json.dumps({"x": 0.3}))
                        except OSError:
                            pass
                        time.sleep(0.01)
                os._exit(0)
    """)
    outcome = run_once(env, tmp_path, sandbox)
    assert outcome.status is Status.OK, outcome.reason
    assert outcome.metric == pytest.approx(TRUE_LOSS)  # not 1.0: the daemon never wrote during scoring
    assert json.loads((tmp_path / "logs" / "artefact" / "model.json").read_text()) == {"x": 0.5}
    assert job_alive("j1") == []


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_sigusr1_arrives_at_the_budget(tmp_path: Path, data: Path, sandbox: str) -> None:
    env = scored_env(tmp_path, """
        import signal, time
        import lib
        X = 0.5
        spent = []
        if __name__ == "__main__":
            signal.signal(signal.SIGUSR1, lambda *_: spent.append(time.process_time()))
            while not spent:  # train until the executor says the budget is spent
                pass
            lib.save_artefact(X)
            print(f"SIGUSR1 after {spent[0]:.2f} CPU s")
    """)
    outcome = run_once(env, tmp_path, sandbox, preset="tight")
    assert outcome.status is Status.OK, outcome.reason
    assert "SIGUSR1 after" in outcome.result.stdout_path.read_text()
    training_s = outcome.result.training_s
    assert training_s is not None and 1.0 <= training_s < 2.0  # at the budget, before budget + grace


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_replaced_function_found_by_the_scorer_is_tampered(tmp_path: Path, data: Path, sandbox: str) -> None:
    env = scored_env(tmp_path, """
        import lib
        X = 0.5
        lib.loss = lambda x, target: 0.5  # what the scorer relies on, replaced when it imports this module
        if __name__ == "__main__":
            lib.save_artefact(X)
    """)
    outcome = run_once(env, tmp_path, sandbox)
    assert outcome.status is Status.TAMPERED
    assert outcome.reason == "the scorer found tampering: lib.loss was replaced by the editable module"


def test_a_training_copy_without_score_keeps_its_hidden_files(tmp_path: Path) -> None:
    quad = Path(__file__).parent / "envs" / "quad"
    manifest = load_manifest(quad)
    assert copy_omits(manifest) == ()
    scored = load_manifest(SCORED)
    copy = copy_environment(SCORED, tmp_path / "code", omit=copy_omits(scored))
    assert sorted(os.listdir(copy)) == ["idealab.toml", "lib.py", "train.py"]


@pytest.mark.slow
def test_a_job_whose_scoring_finished_after_the_orchestrator_was_sigkilled_is_collected(
    tmp_path: Path, data: Path
) -> None:
    workdir = tmp_path / "run"
    command = [
        sys.executable, "-m", "idealab", "run", "--env", str(SCORED), "--preset", "slow", "--epochs", "1",
        "--ideas-per-epoch", "1", "--baseline-runs", "1", "--workdir", str(workdir), "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = workdir / "idealab.db"
    deadline = time.time() + 60
    while not (running := started_jobs(db)) or not job_processes(workdir):  # a job is training (3 s of sleep)
        assert time.time() < deadline and proc.poll() is None, "no job ever ran"
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    running = started_jobs(db)
    exits = [Path(path).parent / "exit.json" for _, path in running]
    while not all(p.is_file() for p in exits):  # the supervisors train and score without an orchestrator
        assert time.time() < deadline + 60, "the orphaned jobs never ended"
        time.sleep(0.05)
    assert all(json.loads(p.read_text())["score"]["returncode"] == 0 for p in exits)

    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        jobs = dict(conn.execute("SELECT job_key, status FROM jobs").fetchall())
        baseline = conn.execute("SELECT status, metric FROM ideas WHERE epoch = -1").fetchone()
    assert all(jobs[key] == "ok" for key, _ in running)  # collected from the exit records, not run again
    assert baseline == ("ok", pytest.approx(TRUE_LOSS))
    assert job_processes(workdir) == []


def test_a_preflight_is_scored_only_with_a_declared_quick_scorer(tmp_path: Path) -> None:
    root = tmp_path / "env"
    shutil.copytree(Path(__file__).parent / "envs" / "scored", root)
    toml = root / "idealab.toml"
    toml.write_text(toml.read_text().replace("timeout_s = 60\n", 'timeout_s = 60\npreflight = "python train.py"\n', 1))
    plain = preflight_manifest(load_manifest(root))
    assert plain.score is None and plain.budget is None and plain.run.command == "python train.py"
    toml.write_text(toml.read_text().replace('command = "python score.py"\n', 'command = "python score.py"\npreflight_command = "python score.py --quick"\n', 1))  # noqa: E501
    quick = preflight_manifest(load_manifest(root))
    assert quick.score is not None and quick.score.command == "python score.py --quick"
