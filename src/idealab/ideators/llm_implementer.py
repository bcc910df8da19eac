"""The LLM implementer: an idea in, an acceptable code change out, checked before any GPU time is spent.

Sampling as in the paper: `samples` candidate changes are requested in parallel; a candidate that cannot be
applied, is refused by the guards, or fails the environment's preflight command goes back to the model
with the reason, at most `revisions` times; the first acceptable change wins and the other samples are
cancelled. The released code's sequential mode is `samples=1, revisions=9`: ten attempts in a row, each
seeing the previous change and its error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from idealab.errors import StopRun
from idealab.executor.base import Backend, JobResult, JobSpec
from idealab.executor.local import LocalBackend
from idealab.executor.runner import (
    classify,
    describe_exit,
    job_spec,
    preflight_manifest,
    prepare_job,
    protected_hashes,
    sandbox_policy,
)
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.guards import check_changes
from idealab.ideators.base import Attempt, IdeaProposal, Implementation
from idealab.ideators.prompting import implement_prompt, implement_prompt_stable_prefix, revise_prompt
from idealab.llm import Annotator, BudgetExhausted, LLMError, LLMRequest, LLMResponse, Message
from idealab.manifest import Manifest
from idealab.patching import ApplyResult, apply_edit, diff_texts, write_changes
from idealab.status import Status

log = logging.getLogger(__name__)

PREFLIGHT_TAIL_LINES = 30
_TAIL_BYTES = 32 * 1024
_CUT_OFF = {"length", "max_tokens", "max_output_tokens"}  # stop reasons meaning "ran out of output tokens"


class Completer(Protocol):
    """What the ideator and implementer call: `LLMService.complete`, or anything with its signature."""

    async def complete(
        self, request: LLMRequest, *, role: str, idea_id: int | None = None, annotate: Annotator | None = None
    ) -> LLMResponse: ...


@dataclass(frozen=True)
class ImplementerSettings:
    samples: int = 4  # candidate changes requested in parallel (the paper sampled 10)
    revisions: int = 2  # revisions of a refused candidate, the failure fed back (paper: 2)
    max_tokens: int = 10000
    temperature: float | None = 1.0
    thinking_budget: int | None = None  # Anthropic extended thinking (set by the builder per provider)
    reasoning_effort: str | None = None  # OpenAI reasoning models
    preflight_slots: int = 2  # preflight commands run at once, at most (each a CPU job of the backend)
    prompt_cache: bool = True  # mark the codebase prefix for the provider's prompt cache (Anthropic)

    def __post_init__(self) -> None:
        if self.samples < 1 or self.revisions < 0 or self.preflight_slots < 1:
            raise ValueError("implementer: samples and preflight_slots must be >= 1 and revisions >= 0")


@dataclass(frozen=True)
class _Candidate:
    result: ApplyResult | None  # the accepted change, or None
    stop: str | None = None  # set when the cost cap stopped this sample


class LLMImplementer:
    name = "llm"

    def __init__(
        self, service: Completer, settings: ImplementerSettings | None = None, backend: Backend | None = None
    ) -> None:
        self.service = service
        self.settings = settings or ImplementerSettings()
        # until `use_backend`: a pool of its own (for tests and tools that run no search)
        self.backend = backend or LocalBackend(SlotPool.cpu_only(self.settings.preflight_slots))
        self.scratch: Path | None = None  # where preflight copies go (None: the system's temporary directory)
        self._preflights = asyncio.Semaphore(self.settings.preflight_slots)  # not all of a run's slots
        self._job_numbers = itertools.count(1)

    def use_backend(self, backend: Backend, scratch: Path) -> None:
        """Run preflight checks as jobs of the run's `backend` (its slots, its sandbox and concealment), with
        their copies under `scratch` (in the workdir, so that a cluster's nodes see them)."""
        self.backend, self.scratch = backend, scratch

    async def implement(
        self, manifest: Manifest, idea_id: int, proposal: IdeaProposal, workspace: Path
    ) -> Implementation:
        system, user = implement_prompt(manifest, workspace, proposal.text)
        prefix = implement_prompt_stable_prefix(manifest, workspace) if self.settings.prompt_cache else 0
        first = Message("user", user, cache_prefix=prefix)
        attempts: list[Attempt] = []
        tasks = [
            asyncio.create_task(self._sample(manifest, idea_id, workspace, system, first, sample, attempts))
            for sample in range(self.settings.samples)
        ]
        stops: list[str] = []
        try:
            for finished in asyncio.as_completed(tasks):
                candidate = await finished
                if candidate.result is not None:
                    return _accepted(candidate.result, attempts)
                if candidate.stop is not None:
                    stops.append(candidate.stop)
        finally:
            for task in tasks:
                task.cancel()  # first acceptable change wins: the other samples stop here
            await asyncio.gather(*tasks, return_exceptions=True)
        if stops:
            raise StopRun(stops[0])
        last = attempts[-1].error if attempts else "no attempt was made"
        reason = f"no acceptable code change after {len(attempts)} attempt(s); last error: {last}"
        return Implementation(False, None, reason, tuple(attempts))

    async def _sample(
        self,
        manifest: Manifest,
        idea_id: int,
        workspace: Path,
        system: str,
        first: Message,
        sample: int,
        attempts: list[Attempt],
    ) -> _Candidate:
        """One line of attempts: a first change, then up to `revisions` corrections."""
        messages: tuple[Message, ...] = (first,)
        for attempt in range(1, self.settings.revisions + 2):
            request = LLMRequest(
                messages,
                system=system,
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                thinking_budget=self.settings.thinking_budget,
                reasoning_effort=self.settings.reasoning_effort,
            )
            try:
                response = await self.service.complete(request, role="implementer", idea_id=idea_id)
            except BudgetExhausted as exc:
                return _Candidate(None, stop=str(exc))
            except LLMError as exc:  # retries already exhausted: this sample cannot go on
                attempts.append(Attempt(attempt, sample, "", "rejected", f"the LLM call failed: {exc}"))
                return _Candidate(None)
            result, error = await self._check(manifest, workspace, response, idea_id)
            fmt = _format_of(response.text, result)
            outcome = "applied" if error is None else "rejected"
            attempts.append(Attempt(attempt, sample, response.text, outcome, error, fmt))
            if result is not None:
                return _Candidate(result)
            assert error is not None
            # The next try sees the original prompt, its own previous answer and why it was refused.
            messages = (
                first,
                Message("assistant", response.text),
                Message("user", revise_prompt(error)),
            )
        return _Candidate(None)

    async def _check(
        self, manifest: Manifest, workspace: Path, response: LLMResponse, idea_id: int
    ) -> tuple[ApplyResult | None, str | None]:
        """(the change, None) when acceptable, else (None, the reason in words for the model)."""
        result = await asyncio.to_thread(apply_edit, workspace, response.text)  # runs `git apply`: off the loop
        if not result.ok:
            error = f"The change could not be applied: {result.error}"
            if response.stop_reason in _CUT_OFF:
                error += "\n(Your answer was cut off at the output limit: write a shorter change.)"
            return None, error
        refusal = check_changes(manifest, result.changes)
        if refusal is not None:
            return None, f"The change was refused: {refusal}"
        if manifest.run.preflight:
            failure = await self._preflight(manifest, workspace, result, idea_id)
            if failure is not None:
                return None, failure
        return result, None

    async def _preflight(self, manifest: Manifest, workspace: Path, result: ApplyResult, idea_id: int) -> str | None:
        """Run the manifest's preflight command on a temporary copy with the change; None when it passes."""
        command = manifest.run.preflight
        assert command is not None
        job_id = f"preflight-i{idea_id}-{next(self._job_numbers)}"
        if self.scratch is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="idealab-preflight-", dir=self.scratch) as tmp:
            code = copy_environment(workspace, Path(tmp) / "code")
            write_changes(code, result.changes)
            log_dir = Path(tmp) / "logs"
            checked = preflight_manifest(manifest)
            if manifest.score is None:
                spec = JobSpec(
                    job_id=job_id,
                    workspace=code,
                    command=command,
                    timeout_s=manifest.run.preflight_timeout_s,
                    gpus=0,
                    env=dict(manifest.run.env),
                    log_dir=log_dir,
                    sandbox=sandbox_policy(manifest),  # the same sandbox as the real job's
                )
            else:  # training, then the scoring step, as a real job runs them (the same sandboxes)
                await asyncio.to_thread(prepare_job, checked, code, log_dir)
                spec = replace(job_spec(checked, code, job_id, log_dir), gpus=0)
            async with self._preflights:
                handle = await self.backend.submit(spec)
                try:
                    done = await self.backend.wait(handle)
                except asyncio.CancelledError:
                    await self.backend.cancel(handle)
                    raise
            failure = _preflight_failure(command, manifest.run.preflight_timeout_s, done)
            if failure is not None or manifest.score is None:
                return failure
            outcome = await asyncio.to_thread(classify, done, checked, code, protected_hashes(manifest))
            if outcome.status is Status.OK:
                return None
            assert checked.score is not None
            return (
                f"The preflight check `{command}` ran, but its scoring (`{checked.score.command}`) did not accept "
                f"the result ({outcome.status.value}): {outcome.reason}"
            )


def _preflight_failure(command: str, timeout_s: float, done: JobResult) -> str | None:
    if done.error is not None:
        return f"The preflight check `{command}` could not be run: {done.error}"
    if done.timed_out:
        what = f"did not finish within {timeout_s:g} s"
    elif done.exit_code != 0:
        what = f"failed ({describe_exit(done.exit_code)})"
    else:
        return None
    tail = _tail(done.stderr_path) or _tail(done.stdout_path)
    return f"The preflight check `{command}` {what}" + (f"; the end of its output:\n{tail}" if tail else ".")


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - _TAIL_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").rstrip().splitlines()[-PREFLIGHT_TAIL_LINES:])


def _format_of(text: str, result: ApplyResult | None) -> str:
    if result is not None:
        return "search-replace" if result.method == "search-replace" else "diff"
    return "search-replace" if "<<<<<<< SEARCH" in text else "diff"


def _accepted(result: ApplyResult, attempts: list[Attempt]) -> Implementation:
    old = {c.path: c.old_text or "" for c in result.changes}
    new = {c.path: c.new_text or "" for c in result.changes}
    return Implementation(True, diff_texts(old, new), None, tuple(attempts), result.changes)
