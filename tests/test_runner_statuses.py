"""run_job on planted environments: every way a run can end maps to the right status and reason."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from idealab.executor.base import JobStart
from idealab.executor.local import LocalBackend
from idealab.executor.runner import Outcome, describe_exit, protected_hashes, run_job
from idealab.executor.sandbox import copy_environment, hash_files
from idealab.executor.slots import SlotPool
from idealab.manifest import Manifest, load_manifest
from idealab.status import Status

MANIFEST = """
name = "planted"
description = "A toy environment whose train.py is replaced by each test."

[run]
command = "python train.py"
timeout_s = {timeout}
gpus = {gpus}

[metric]
name = "score"
goal = "maximize"
valid_range = [0.0, 1.0]

[files]
editable = ["train.py"]
readonly = ["evaluate.py"]
hidden = ["secret/grader.py"]
"""


def make_env(tmp_path: Path, train: str, timeout: float = 5, gpus: int = 0) -> tuple[Manifest, Path]:
    """A pristine environment in tmp_path/env and the job's copy of it in tmp_path/job/workspace."""
    root = tmp_path / "env"
    (root / "secret").mkdir(parents=True)
    (root / "idealab.toml").write_text(MANIFEST.format(timeout=timeout, gpus=gpus))
    (root / "evaluate.py").write_text("def evaluate():\n    return 0.5\n")
    (root / "secret" / "grader.py").write_text("ANSWERS = [1, 2, 3]\n")
    (root / "train.py").write_text(textwrap.dedent(train))
    manifest = load_manifest(root)
    workspace = copy_environment(root, tmp_path / "job" / "workspace")
    return manifest, workspace


def run_planted(tmp_path: Path, train: str, timeout: float = 5, gpus: int = 0, sandbox: str = "auto") -> Outcome:
    manifest, workspace = make_env(tmp_path, train, timeout, gpus)

    async def main() -> Outcome:
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=0.5, sandbox=sandbox)
        return await run_job(backend, manifest, workspace, "job-1", tmp_path / "job" / "logs")

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_ok_reports_the_metric(tmp_path: Path) -> None:
    outcome = run_planted(tmp_path, 'print(\'@metric {"name": "score", "value": 0.25}\')\nprint("done")\n')
    assert outcome.status is Status.OK and outcome.metric == 0.25 and outcome.reason is None
    assert [v.value for v in outcome.values] == [0.25]
    assert outcome.result.exit_code == 0
    assert outcome.result.stdout_path == tmp_path / "job" / "logs" / "stdout.log"


def test_crash_is_failed_with_the_error_tail(tmp_path: Path) -> None:
    outcome = run_planted(tmp_path, 'print("starting")\nraise ValueError("boom-123")\n')
    assert outcome.status is Status.FAILED and outcome.metric is None
    assert outcome.reason is not None
    assert outcome.reason.startswith("exit code 1") and "ValueError: boom-123" in outcome.reason


def test_hang_is_timeout(tmp_path: Path) -> None:
    outcome = run_planted(tmp_path, "import time\ntime.sleep(60)\n", timeout=1)
    assert outcome.status is Status.TIMEOUT and outcome.reason is not None and "1 s" in outcome.reason
    assert outcome.result.timed_out


def test_nan_metric_is_invalid(tmp_path: Path) -> None:
    outcome = run_planted(tmp_path, 'print(\'@metric {"name": "score", "value": NaN}\')\n')
    assert outcome.status is Status.INVALID and outcome.metric is None
    assert outcome.reason is not None and "not finite" in outcome.reason


def test_out_of_range_metric_is_invalid(tmp_path: Path) -> None:
    outcome = run_planted(tmp_path, 'print(\'@metric {"name": "score", "value": 1.5}\')\n')
    assert outcome.status is Status.INVALID and outcome.metric is None
    assert outcome.reason is not None and "outside the valid range" in outcome.reason
    assert [v.value for v in outcome.values] == [1.5]  # the raw value is kept for the record


def test_missing_metric_is_invalid(tmp_path: Path) -> None:
    outcome = run_planted(tmp_path, 'print(\'@metric {"name": "other", "value": 0.5}\')\n')
    assert outcome.status is Status.INVALID
    assert outcome.reason is not None and "no value of metric 'score'" in outcome.reason


def test_writing_a_readonly_file_is_tampered(tmp_path: Path) -> None:
    train = """
        with open("evaluate.py", "w") as f:
            f.write("def evaluate():\\n    return 1.0\\n")
        print('@metric {"name": "score", "value": 1.0}')
    """
    # without a sandbox the write succeeds and the check against the pristine hashes sees it; in one, the
    # file is bound read-only and the write fails (tests/test_sandbox.py)
    outcome = run_planted(tmp_path, train, sandbox="off")
    assert outcome.status is Status.TAMPERED and outcome.metric is None
    assert outcome.reason is not None and "evaluate.py" in outcome.reason


def test_editing_a_hidden_file_is_tampered_even_if_the_job_then_crashes(tmp_path: Path) -> None:
    train = """
        with open("secret/grader.py", "a") as f:
            f.write("ANSWERS.append(4)\\n")
        raise SystemExit(2)
    """
    outcome = run_planted(tmp_path, train, sandbox="off")  # see above
    assert outcome.status is Status.TAMPERED
    assert outcome.reason is not None and "secret/grader.py" in outcome.reason


def test_expected_hashes_default_to_the_pristine_environment(tmp_path: Path) -> None:
    manifest, workspace = make_env(tmp_path, 'print(\'@metric {"name": "score", "value": 0.5}\')\n')
    (workspace / "evaluate.py").write_text("# changed before the run, e.g. by a bad diff\n")

    async def main(expected: dict[str, str] | None) -> Outcome:
        backend = LocalBackend(SlotPool.cpu_only(1))
        job_id = "with-defaults" if expected is None else "with-explicit"
        return await run_job(backend, manifest, workspace, job_id, tmp_path / job_id, None, expected)

    assert asyncio.run(main(None)).status is Status.TAMPERED
    # a caller that accepts this change (passes its own hashes) gets the run judged normally
    accepted = {**protected_hashes(manifest), **hash_files(workspace, ["evaluate.py"])}
    assert asyncio.run(main(accepted)).status is Status.OK


def test_cancelled_run(tmp_path: Path) -> None:
    manifest, workspace = make_env(tmp_path, "import time\ntime.sleep(60)\n")

    async def main() -> Outcome:
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=0.5)
        started = asyncio.Event()

        def on_start(_: JobStart) -> None:
            started.set()

        running = asyncio.create_task(
            run_job(backend, manifest, workspace, "c1", tmp_path / "logs", on_start)
        )
        await started.wait()
        await backend.cancel("c1")
        return await running

    outcome = asyncio.run(asyncio.wait_for(main(), 30))
    assert outcome.status is Status.CANCELLED and outcome.result.cancelled


def test_backend_error_is_failed(tmp_path: Path) -> None:
    # the manifest wants a GPU; a CPU-only pool can never run it: a backend error, not a crash
    outcome = run_planted(tmp_path, "print('never runs')\n", gpus=1)
    assert outcome.status is Status.FAILED
    assert outcome.reason is not None and "backend could not run" in outcome.reason


def test_describe_exit() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(None).startswith("the process ended")
