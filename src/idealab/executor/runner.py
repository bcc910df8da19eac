"""From a job to an experiment outcome: run the manifest's command, then classify how it went.

Order of verdicts: cancelled -> CANCELLED; the backend could not run it -> FAILED; a readonly or hidden
file differs from the pristine environment -> TAMPERED; over the training budget or the time limit ->
TIMEOUT; non-zero exit -> FAILED; otherwise the metric decides OK or INVALID. A TIMEOUT carries a (partial)
metric only when the manifest's `metric.partial_on_timeout` asks for it and the values printed before the
limit judge ok.

With a `[score]` table the metric comes only from the scoring step's stdout (the training's values are
progress): a scorer that reports tampering (`idealab-tampered: <reason>`) or a changed file of the scoring
directory -> TAMPERED; scoring past its limit -> TIMEOUT; scoring that fails -> FAILED; else its values are
judged. Without `[score]` the training's own output is judged, which the changed code can forge (weaker).
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import dataclass, replace
from pathlib import Path

from idealab.executor.base import Backend, Budget, JobResult, JobSpec, OnStart, ScoringEnd, ScoringSpec
from idealab.executor.bwrap import Limits, SandboxPolicy
from idealab.executor.sandbox import hash_files
from idealab.executor.scoring import (
    ARTEFACT_DIR_VAR,
    BUDGET_CLOCK_VAR,
    BUDGET_VAR,
    OUTPUT_DIR_VAR,
    TAMPERED_PREFIX,
    TRAINING_ONLY_VARS,
    artefact_dir,
    prepare_scoring,
    scoring_dir,
)
from idealab.executor.supervisor import PROGRESS_SOURCE
from idealab.manifest import Manifest, MetricSpec
from idealab.metrics import MetricStream, MetricValue, judge, stream_values
from idealab.patching import diff_trees
from idealab.status import Status

SEED_VAR = "IDEALAB_SEED"  # every job's seed; environments derive all their randomness from it
TRAINING_TIME_METRIC = "training_s"  # stored with each job: the training time the executor measured
EXECUTOR_SOURCE = "executor"
ERROR_TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024  # enough for 20 lines of any sane error; bounds reading a huge log
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Outcome:
    status: Status  # OK, FAILED, TIMEOUT, INVALID, TAMPERED or CANCELLED
    metric: float | None  # the judged metric: set when OK, or partial on a TIMEOUT (see the docstring)
    reason: str | None  # why it is not OK (FAILED: exit code and the error's last lines)
    values: list[MetricValue]  # the values the run printed (capped: first, last, deciding), whatever the status
    result: JobResult


def copied_protected(manifest: Manifest) -> tuple[str, ...]:
    """The protected files a job's copy holds: with a scoring step the hidden files stay out of it (only
    the scoring directory has them); without one, training runs the evaluation and needs them."""
    files = manifest.files
    return files.readonly if manifest.score is not None else files.protected


def copy_omits(manifest: Manifest) -> tuple[str, ...]:
    """Files of the environment that a job's copy must not hold."""
    return manifest.files.hidden if manifest.score is not None else ()


def protected_hashes(manifest: Manifest) -> dict[str, str]:
    """sha256 of the pristine environment's protected files that a job's copy holds."""
    return hash_files(manifest.root, copied_protected(manifest))


def copy_matches_diff(manifest: Manifest, workspace: Path, stored_diff: str) -> bool:
    """Whether `workspace` is the pristine environment plus exactly `stored_diff` (over the files shown to
    the implementer and those the diff names): what will run is what the run records."""
    headers = [line for line in stored_diff.split("\n") if line.startswith(("--- a/", "+++ b/"))]
    named = {line[6:] for line in headers}
    paths = sorted(set(manifest.files.shown) | named)
    return diff_trees(manifest.root, workspace, paths) == stored_diff


def sandbox_policy(manifest: Manifest) -> SandboxPolicy:
    """What a job (or preflight) of this environment may see and use: its protected files read-only, the
    environment's source directory concealed, the manifest's network, variables and limits."""
    run = manifest.run
    return SandboxPolicy(
        network=run.network,
        allow_env=run.allow_env,
        readonly=manifest.files.protected,
        conceal=(manifest.root,),
        limits=Limits(run.memory_mb, run.max_open_files, run.max_file_mb, run.max_processes, run.max_disk_mb),
        mode=run.sandbox,
        private_data=manifest.score.private_data if manifest.score is not None else (),
    )


def with_sandbox_options(
    manifest: Manifest,
    sandbox: str | None = None,
    memory_mb: int | None = None,
    max_open_files: int | None = None,
    max_file_mb: int | None = None,
    max_processes: int | None = None,
    max_disk_mb: int | None = None,
) -> Manifest:
    """The manifest with the command line's sandbox settings: `require` from either side wins, else the
    command line's mode, else the manifest's; each limit is the stricter of the two."""
    run = manifest.run
    mode = "require" if "require" in (sandbox, run.sandbox) else sandbox or run.sandbox
    limits = Limits(run.memory_mb, run.max_open_files, run.max_file_mb, run.max_processes, run.max_disk_mb).merged(
        Limits(memory_mb, max_open_files, max_file_mb, max_processes, max_disk_mb)
    )
    new_run = replace(
        run, sandbox=mode, memory_mb=limits.memory_mb, max_open_files=limits.open_files,
        max_file_mb=limits.file_size_mb, max_processes=limits.processes, max_disk_mb=limits.disk_mb,
    )  # fmt: skip
    return replace(manifest, run=new_run)


def job_spec(manifest: Manifest, workspace: Path, job_id: str, log_dir: Path, seed: int = 0) -> JobSpec:
    """The manifest's run as a job. `run.env` goes unexpanded: `${VAR}`s are filled in at start time.

    The seed is part of the contract: always in IDEALAB_SEED, and also in the manifest's own variable
    (`run.seed_env`) or appended as a flag (`run.seed_flag`) where it names one."""
    run = manifest.run
    env = {**run.env, SEED_VAR: str(seed)}
    if run.seed_env:
        env[run.seed_env] = str(seed)
    command = f"{run.command} {run.seed_flag} {seed}" if run.seed_flag else run.command
    policy = sandbox_policy(manifest)
    budget = None
    if manifest.budget is not None:
        budget = Budget(manifest.budget.seconds, manifest.budget.clock.value, manifest.budget.grace_s)
        env[BUDGET_VAR] = f"{manifest.budget.seconds:g}"
        env[BUDGET_CLOCK_VAR] = manifest.budget.clock.value
    scoring = None
    if manifest.score is not None:
        artefact = artefact_dir(log_dir).resolve()
        env[OUTPUT_DIR_VAR] = str(artefact)
        policy = replace(policy, writable=(artefact,))
        scoring = ScoringSpec(
            command=manifest.score.command,
            workspace=scoring_dir(log_dir).resolve(),
            timeout_s=manifest.score.timeout_s,
            env={ARTEFACT_DIR_VAR: str(artefact)},
            unset=TRAINING_ONLY_VARS,
            sandbox=replace(
                policy, conceal=(manifest.root, workspace.resolve()), writable=(), readonly_dirs=(artefact,),
                private_data=(),
            ),
        )  # fmt: skip
    return JobSpec(
        job_id=job_id,
        workspace=workspace,
        command=command,
        timeout_s=run.timeout_s,
        gpus=run.gpus,
        env=env,
        log_dir=log_dir,
        metric_name=manifest.metric.name,
        metric_regex=manifest.metric.regex.pattern if manifest.metric.regex is not None else None,
        sandbox=policy,
        budget=budget,
        scoring=scoring,
    )


def preflight_manifest(manifest: Manifest) -> Manifest:
    """The manifest a preflight check runs as a job: `run.preflight` as the training, within
    `run.preflight_timeout_s` and without the `[budget]` (the preflight command sets its own short length),
    then, where `[score]` declares a `preflight_command`, that quick scoring step in the same fresh scoring
    directory as a real job's (without one, no scoring: a full scorer may need the job's GPUs or hours)."""
    run = manifest.run
    if run.preflight is None:
        raise ValueError(f"environment {manifest.name!r} has no [run] preflight")
    short = replace(run, command=run.preflight, timeout_s=run.preflight_timeout_s, seed_flag=None)
    checked = replace(manifest, budget=None, run=short)
    score = manifest.score
    if score is None or score.preflight_command is None:
        return replace(checked, score=None)
    return replace(checked, score=replace(score, command=score.preflight_command))


def prepare_job(manifest: Manifest, workspace: Path, log_dir: Path) -> None:
    """What a job needs besides its copy, made before it is submitted: with `[score]`, a fresh artefact
    directory and the scoring directory (pristine protected files, the editable files as they will run)."""
    if manifest.score is not None:
        files = manifest.files
        prepare_scoring(manifest.root, workspace, log_dir, files.protected, files.editable)


async def run_job(
    backend: Backend,
    manifest: Manifest,
    workspace: Path,
    job_id: str,
    log_dir: Path,
    on_start: OnStart | None = None,
    expected_hashes: dict[str, str] | None = None,
    seed: int = 0,
) -> Outcome:
    """Run the manifest's command in `workspace` (a prepared copy of the environment) with `seed`, and judge it."""
    expected = expected_hashes if expected_hashes is not None else protected_hashes(manifest)
    await asyncio.to_thread(prepare_job, manifest, workspace, log_dir)
    handle = await backend.submit(job_spec(manifest, workspace, job_id, log_dir, seed), on_start)
    result = await backend.wait(handle)
    # off the event loop: hashing files and reading values must not stall other jobs' bookkeeping
    return await asyncio.to_thread(classify, result, manifest, workspace, expected)


def classify(result: JobResult, manifest: Manifest, workspace: Path, expected: dict[str, str]) -> Outcome:
    """The verdict on a finished job (see the module docstring for the order)."""
    if result.cancelled:
        return Outcome(Status.CANCELLED, None, "cancelled before it finished", [], result)
    if result.error is not None:
        return Outcome(Status.FAILED, None, f"the backend could not run the job: {result.error}", [], result)
    values = read_values(result, manifest.metric)
    if result.training_s is not None:
        values.append(MetricValue(TRAINING_TIME_METRIC, result.training_s, None, EXECUTOR_SOURCE))
    changed = sorted(
        rel for rel, digest in hash_files(workspace, expected).items() if digest != expected[rel]
    )
    if changed:
        reason = f"protected file(s) changed during the run: {', '.join(changed)}"
        return Outcome(Status.TAMPERED, None, reason, values, result)
    if result.over_budget:
        assert manifest.budget is not None or result.training_s is not None
        budget = manifest.budget
        spent = f"{budget.seconds:g} s of {budget.clock.value} time" if budget is not None else "its budget"
        used = f"; killed after {result.training_s:.1f} s" if result.training_s is not None else ""
        return Outcome(Status.TIMEOUT, None, f"over its training budget ({spent}){used}", values, result)
    if result.timed_out:
        reason = f"exceeded the time limit of {manifest.run.timeout_s:g} s"
        if manifest.score is not None:
            return Outcome(Status.TIMEOUT, None, reason, values, result)  # progress values never score
        return _timed_out(reason, values, result, manifest)
    if result.exit_code != 0:
        tail = _tail(result.stderr_path) or _tail(result.stdout_path)
        hit = f"{result.limit_hit}: " if result.limit_hit else limit_reason(result.exit_code, tail, manifest)
        stopped = result.exit_code is None and result.limit_hit  # stopped by its supervisor (disk cap)
        reason = hit + ("the job was stopped" if stopped else describe_exit(result.exit_code))
        reason += f"\n{tail}" if tail else ""
        return Outcome(Status.FAILED, None, reason, values, result)
    if manifest.score is not None:
        return _scored(result, manifest, values)
    verdict = judge(values, manifest.metric)
    if not verdict.ok:
        return Outcome(Status.INVALID, None, verdict.reason, values, result)
    return Outcome(Status.OK, verdict.metric, None, values, result)


def _scored(result: JobResult, manifest: Manifest, values: list[MetricValue]) -> Outcome:
    """The verdict of a job with a scoring step whose training exited 0: only scoring's values count."""
    scoring: ScoringEnd | None = result.scoring
    if scoring is None:
        return Outcome(Status.FAILED, None, "the scoring step did not run (the backend has none)", values, result)
    assert manifest.score is not None
    directory = scoring_dir(scoring.stdout_path.parent)
    pristine = hash_files(manifest.root, manifest.files.protected)
    changed = sorted(rel for rel, digest in hash_files(directory, pristine).items() if digest != pristine[rel])
    if changed:
        reason = f"protected file(s) of the scoring directory changed during scoring: {', '.join(changed)}"
        return Outcome(Status.TAMPERED, None, reason, values, result)
    claim = _forged_claim(values, manifest)
    if claim is not None:
        return Outcome(Status.TAMPERED, None, claim, values, result)
    tampered = _tampered_line(scoring.stdout_path)
    if tampered is not None:
        return Outcome(Status.TAMPERED, None, f"the scorer found tampering: {tampered}", values, result)
    if scoring.error is not None:
        return Outcome(Status.FAILED, None, f"the scoring step could not run: {scoring.error}", values, result)
    if scoring.timed_out:
        reason = f"scoring exceeded its time limit of {manifest.score.timeout_s:g} s"
        return Outcome(Status.TIMEOUT, None, reason, values, result)
    if scoring.exit_code != 0:
        tail = _tail(scoring.stderr_path) or _tail(scoring.stdout_path)
        reason = f"scoring failed: {describe_exit(scoring.exit_code)}" + (f"\n{tail}" if tail else "")
        return Outcome(Status.FAILED, None, reason, values, result)
    scored = [v for v in values if v.source not in (PROGRESS_SOURCE, EXECUTOR_SOURCE)]
    verdict = judge(scored, manifest.metric)
    if not verdict.ok:
        return Outcome(Status.INVALID, None, f"scoring: {verdict.reason}", values, result)
    return Outcome(Status.OK, verdict.metric, None, values, result)


def _forged_claim(values: list[MetricValue], manifest: Manifest) -> str | None:
    """Why the training's output is a forged result, when the manifest reserves the metric's name for the
    scorer (`[score] exclusive_metric`) and the training process printed a value under that name."""
    assert manifest.score is not None
    if not manifest.score.exclusive_metric:
        return None
    name = manifest.metric.name
    claims = [v for v in values if v.source == PROGRESS_SOURCE and v.name == name]
    if not claims:
        return None
    return (f"the training process reported the scored metric itself ({name} = {claims[0].value:g}); only the "
            f"scorer reports {name}, after training")


def _tampered_line(path: Path) -> str | None:
    """The reason on the first `idealab-tampered:` line of the scorer's output, if there is one."""
    try:
        with path.open("rb") as handle:
            for raw in handle:
                line = raw.decode(errors="replace").strip()
                if line.startswith(TAMPERED_PREFIX):
                    return line[len(TAMPERED_PREFIX) :].strip() or "no reason given"
    except FileNotFoundError:
        return None
    return None


def _timed_out(reason: str, values: list[MetricValue], result: JobResult, manifest: Manifest) -> Outcome:
    if manifest.metric.partial_on_timeout:
        verdict = judge(values, manifest.metric)
        if verdict.ok:
            n = sum(1 for v in values if v.name == manifest.metric.name)
            reason += (f"; metric is partial: {manifest.metric.reduce.value} of the {n} value(s) of "
                       f"{manifest.metric.name} printed before the limit")
            return Outcome(Status.TIMEOUT, verdict.metric, reason, values, result)
    return Outcome(Status.TIMEOUT, None, reason, values, result)


# how programs word a failed allocation: Python, C/C++ runtimes, glibc's errno text, PyTorch's CPU allocator
_OUT_OF_MEMORY = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "DefaultCPUAllocator: can't allocate")


def limit_reason(exit_code: int | None, tail: str, manifest: Manifest) -> str:
    """'' or the limit a failed job ran into, said first: `memory limit (N MiB) reached: `..."""
    run = manifest.run
    if exit_code == -signal.SIGXFSZ or "File too large" in tail:
        return f"file-size limit ({run.max_file_mb} MiB per file) reached: " if run.max_file_mb else ""
    if run.memory_mb is not None and any(word in tail for word in _OUT_OF_MEMORY):
        return f"memory limit ({run.memory_mb} MiB) reached: "
    if run.max_open_files is not None and "Too many open files" in tail:
        return f"open-file limit ({run.max_open_files}) reached: "
    return ""


def describe_exit(exit_code: int | None) -> str:
    if exit_code is None:
        return "the process ended without an exit code"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"killed by {name}"
    return f"exit code {exit_code}"


def read_values(result: JobResult, spec: MetricSpec) -> list[MetricValue]:
    """The values the backend streamed out of stdout, else those of the stdout log read in chunks."""
    if result.metrics_path is not None:
        with result.metrics_path.open() as lines:
            return [MetricValue(*json.loads(line)) for line in lines]
    stream = MetricStream(spec.name, spec.regex)
    try:
        with result.stdout_path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
                stream.feed(chunk)
    except FileNotFoundError:
        return []
    stream.finish()
    return stream_values(stream)


def _tail(path: Path, lines: int = ERROR_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' when absent or empty)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:])
