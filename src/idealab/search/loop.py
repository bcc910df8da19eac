"""The execution-guided search loop.

Epoch 0 samples N ideas; epoch t >= 1 splits N into exploit and explore. Everything is event-driven: an
idea's job is submitted the moment its code change is ready (the backend holds it until a slot is free),
and the next epoch's ideation starts once a configurable fraction of the current epoch has results.
Every step is written to the store first, so a killed orchestrator resumes without losing or repeating work.
When the machine fails instead of an idea (disk full, database locked or unreadable: a `RunFault`), the
search stops at once: in-flight work is cancelled, no idea is blamed, and `run()` raises the fault; a
resume continues from the committed state.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from idealab.errors import RunFault, StopRun, storage_fault
from idealab.executor.base import Backend, JobStart
from idealab.executor.local import result_from_record, settle_stale_job
from idealab.executor.runner import Outcome, classify, protected_hashes, run_job
from idealab.executor.shared import POOL_DIR, SharedFiles
from idealab.executor.supervisor import METRICS_NAME
from idealab.ideators.base import (
    IdeaKind,
    IdeaProposal,
    IdeationRequest,
    Ideator,
    Implementer,
    PastIdea,
)
from idealab.manifest import Manifest
from idealab.patching import apply_edit, diff_trees, write_changes
from idealab.search.faults import check_free_space, copy_error, last_sign_of_life
from idealab.search.journal import BASELINE_EPOCH, Journal
from idealab.search.schedule import ExploitSchedule
from idealab.status import IN_FLIGHT, Status
from idealab.store import IdeaRecord, JobEnd, Store


@dataclass(frozen=True)
class SearchConfig:
    epochs: int = 10
    ideas_per_epoch: int = 80
    seed: int = 0
    schedule: ExploitSchedule = field(default_factory=ExploitSchedule)
    next_epoch_at: float = 0.5  # fraction of an epoch whose jobs ran before the next epoch's ideation
    batch_size: int = 10  # ideas per ideator call
    ideation_retries: int = 3  # extra calls when an ideator returns fewer ideas than asked
    history_sample: int = 100  # past ideas shown per exploit/explore request
    implement_concurrency: int = 10

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.ideas_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("epochs, ideas_per_epoch and batch_size must be >= 1")
        if not 0.0 < self.next_epoch_at <= 1.0:
            raise ValueError("next_epoch_at must be in (0, 1]")


@dataclass(frozen=True)
class SearchEvent:
    kind: str  # "idea" | "started" | "finished" | "epoch" | "stopping"
    epoch: int
    idea_id: int | None = None
    status: Status | None = None
    metric: float | None = None
    text: str | None = None


def derive_seed(*parts: object) -> int:
    """A stable seed from the run seed and a position, so resumed work repeats its randomness."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Search:
    def __init__(
        self,
        manifest: Manifest,
        store: Store,
        run_id: int,
        backend: Backend,
        ideator: Ideator,
        implementer: Implementer,
        config: SearchConfig,
        workdir: Path,
        on_event: Callable[[SearchEvent], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.run_id = run_id
        self.backend = backend
        self.ideator = ideator
        self.implementer = implementer
        self.config = config
        self.workdir = workdir
        self.on_event = on_event or (lambda event: None)
        self.baseline: float | None = manifest.metric.baseline
        self.internal_errors: list[str] = []
        self._stopping = False
        self.fault: RunFault | None = None  # set when the machine failed: the search stops and raises it
        self._faulted = asyncio.Event()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._executing: set[asyncio.Task[None]] = set()  # tasks whose idea's job was handed to the backend
        self._implement_slots = asyncio.Semaphore(config.implement_concurrency)
        # large files are linked read-only from one pool in the workdir, not copied per experiment
        self.copies = SharedFiles(manifest.root, workdir / POOL_DIR, manifest.files.editable, exclude=workdir)

    # ------------------------------------------------------------------------------------------ driver

    async def run(self) -> None:
        """Run (or resume) the search; raises a RunFault after stopping cleanly if the machine failed."""
        try:
            await self._run_epochs()
        except RunFault as fault:
            self._fault(fault)
        if self.fault is not None:
            for task in self._tasks:
                task.cancel()  # a cancelled job is stopped by the backend's close and re-run on resume
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise self.fault

    async def _run_epochs(self) -> None:
        await self._recover()
        self._start_baseline()
        for epoch in range(self.config.epochs):
            if epoch > 0:
                await self._wait_for_gate(epoch)
            if self._stopping:
                break
            for idea in self.store.ideas(self.run_id, epoch=epoch):
                self._schedule(idea)  # on resume: ideas stored before the crash
            try:
                await self._ideate(epoch)
            except StopRun as stop:
                self._stop(str(stop) or "stop requested")
            self.on_event(SearchEvent("epoch", epoch))
        while self._tasks and self.fault is None:
            faulted = asyncio.ensure_future(self._faulted.wait())
            try:
                await asyncio.wait({*self._tasks, faulted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                faulted.cancel()
        if self.fault is None:
            self._cancel_unstarted()

    async def shutdown(self) -> None:
        """After an interrupt (SIGINT, SIGTERM) and once the backend is closed: nothing new starts, the
        tasks of jobs that were running record them as interrupted (to run again on resume), and ideas
        still being implemented are cancelled (they go back to `proposed` on resume)."""
        self._stopping = True
        for task in self._tasks - self._executing:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _stop(self, reason: str) -> None:
        if not self._stopping:
            self._stopping = True
            self._stop_reason = reason
            self.on_event(SearchEvent("stopping", -1, text=reason))

    def _fault(self, fault: RunFault) -> None:
        """The machine failed: stop now (the run() driver cancels what is in flight and raises it)."""
        if self.fault is None:
            self.fault = fault
            self._faulted.set()
            self._stop("the machine failed (the error follows)")

    async def _recover(self) -> None:
        """Put ideas that were in flight when the orchestrator died back in a state they can restart from;
        a job that finished meanwhile (its supervisor saw it end) keeps its result instead of running again."""
        for idea in self.store.ideas(self.run_id, statuses=[s.value for s in IN_FLIGHT]):
            collected = False
            for job in self.store.jobs(idea_id=idea.id):
                if job.finished_at is not None:
                    continue
                settled = await settle_stale_job(job.pid, job.job_key, job.stdout_path.parent)
                record = settled.record
                if record is not None and record.ended != "stopped" and idea.status is Status.RUNNING:
                    metrics_path = job.stdout_path.parent / METRICS_NAME
                    result = result_from_record(record, job.gpu_ids, job.stdout_path, job.stderr_path, metrics_path)
                    expected = protected_hashes(self.manifest)
                    outcome = await asyncio.to_thread(classify, result, self.manifest, job.workspace, expected)
                    self._record_outcome(idea, job.job_key, outcome)
                    collected = True
                    continue
                # A job found dead ended when its supervisor saw it end, else at its logs' last write, not
                # now: the time the orchestrator was down (or hung on a full disk) is not compute.
                if settled.stopped_now:
                    ended = time.time()
                elif record is not None:
                    ended = record.finished_at
                else:
                    ended = last_sign_of_life(job)
                self.store.job_finished(job.job_key, ended, None, False, "abandoned", "orchestrator restarted")
            if collected:
                continue
            if idea.status is Status.IMPLEMENTING:
                self.store.update_idea(idea.id, status=Status.PROPOSED)
            elif idea.status is Status.RUNNING:
                self.store.update_idea(idea.id, status=Status.READY, started_at=None)

    def _start_baseline(self) -> None:
        run = self.store.get_run()
        if self.baseline is not None:
            if run is not None and run.baseline_metric is None:
                self.store.set_baseline(self.run_id, self.baseline, "given", "from the manifest")
            return
        idea = self.store.add_idea(
            self.run_id, BASELINE_EPOCH, 0, IdeaKind.BASELINE.value, "Baseline: the unmodified environment.",
            "baseline", {},
        )
        if idea.status is Status.OK and idea.metric is not None:
            self.baseline = idea.metric
        self._schedule(idea)

    # --------------------------------------------------------------------------------------- ideation

    async def _wait_for_gate(self, epoch: int) -> None:
        """Wait until enough of the previous epoch (and the baseline) has results.

        Only experiments whose job ran count: an idea that could not be implemented is no evidence for the
        next epoch. When the previous epoch has settled with fewer results than asked, the gate opens
        anyway, since no more evidence will come.
        """
        prev_target = len(self.store.ideas(self.run_id, epoch=epoch - 1))
        needed = math.ceil(self.config.next_epoch_at * prev_target)

        def ready() -> bool:
            prev = self.store.ideas(self.run_id, epoch=epoch - 1)
            results = sum(1 for i in prev if i.status.has_result)
            settled = all(i.status.terminal for i in prev)
            return self._stopping or ((results >= needed or settled) and self._baseline_settled())

        async with self._changed:
            await self._changed.wait_for(ready)

    def _journal(self) -> Journal[IdeaRecord]:
        return Journal.load(self.store, self.run_id, self.manifest.metric.goal, self.baseline)

    def _baseline_settled(self) -> bool:
        if self.baseline is not None:
            return True
        baseline = self.store.ideas(self.run_id, epoch=BASELINE_EPOCH)
        return not baseline or baseline[0].status.terminal

    async def _ideate(self, epoch: int) -> None:
        n = self.config.ideas_per_epoch
        if epoch == 0:
            plan = [(IdeaKind.INITIAL, 0, n)]
        else:
            n_exploit, n_explore = self.config.schedule.split(epoch, n)
            plan = [(IdeaKind.EXPLOIT, 0, n_exploit), (IdeaKind.EXPLORE, n_exploit, n_explore)]
        for kind, first_idx, count in plan:
            await self._ideate_kind(epoch, kind, first_idx, count)

    async def _ideate_kind(self, epoch: int, kind: IdeaKind, first_idx: int, count: int) -> None:
        shortfalls = 0
        while not self._stopping:
            existing = self.store.ideas(self.run_id, epoch=epoch)
            taken = {i.idx for i in existing}
            free = [idx for idx in range(first_idx, first_idx + count) if idx not in taken]
            if not free:
                return
            ask = min(self.config.batch_size, len(free))
            history, beat_baseline = self._history(epoch, kind, free[0])
            request = IdeationRequest(
                epoch=epoch,
                kind=kind,
                count=ask,
                history=history,
                avoid=[i.text for i in existing if i.epoch == epoch],
                baseline=self.baseline,
                seed=derive_seed(self.config.seed, epoch, kind.value, free[0]),
                history_beat_baseline=beat_baseline,
                proposed=self.store.idea_payloads(self.run_id),
            )
            proposals = (await self.ideator.propose(self.manifest, request))[:ask]
            for idx, proposal in zip(free, proposals, strict=False):
                payload = dict(proposal.payload)
                if proposal.diff is not None:
                    payload["diff"] = proposal.diff
                idea = self.store.add_idea(
                    self.run_id, epoch, idx, kind.value, proposal.text, self.ideator.name, payload
                )
                self.on_event(SearchEvent("idea", epoch, idea.id, idea.status, text=idea.text))
                self._schedule(idea)
            if len(proposals) < ask:
                shortfalls += 1
                if shortfalls > self.config.ideation_retries:
                    return  # go on with what there is

    def _history(self, epoch: int, kind: IdeaKind, position: int) -> tuple[list[PastIdea], bool]:
        """The past ideas shown to one ideation request, and whether they all beat the baseline."""
        if kind is IdeaKind.INITIAL:
            return [], False
        rng = random.Random(derive_seed(self.config.seed, "history", epoch, kind.value, position))
        journal = self._journal().before(epoch)
        beat_baseline = False
        if kind is IdeaKind.EXPLOIT:
            pool = journal.winners()
            beat_baseline = bool(pool)
            if not pool:  # nothing beat the baseline yet: refine the best that ran
                pool = journal.ranked()[:10]
        else:
            pool = [i for i in journal.experiments if i.status.terminal]
        chosen = rng.sample(pool, k=min(self.config.history_sample, len(pool)))
        return [PastIdea(i.id, i.epoch, i.text, i.status, i.metric, i.payload) for i in chosen], beat_baseline

    # -------------------------------------------------------------------------------------- execution

    def _schedule(self, idea: IdeaRecord) -> None:
        if idea.status.terminal:
            return
        task = asyncio.create_task(self._process(idea))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, idea: IdeaRecord) -> None:
        try:
            await self._process_unchecked(idea)
        except RunFault as fault:  # the machine, not the idea: leave the idea as it is for the resume
            self._fault(fault)
        except OSError as exc:
            problem = storage_fault(exc, f"experiment {idea.id}")
            if problem is None:
                self._internal_error(idea, exc)
            else:
                self._fault(problem)
        except Exception as exc:  # a bug: record it on the idea, keep the run going, report at the end
            self._internal_error(idea, exc)
        finally:
            async with self._changed:
                self._changed.notify_all()

    def _internal_error(self, idea: IdeaRecord, exc: Exception) -> None:
        detail = "".join(traceback.format_exception(exc))[-2000:]
        self.internal_errors.append(f"idea {idea.id}: {detail}")
        try:
            self._finish(idea, Status.FAILED, None, f"idealab internal error: {exc!r}")
        except RunFault as fault:  # not even the failure can be written: stop rather than hang the epoch
            self._fault(fault)

    def _paths(self, idea: IdeaRecord) -> tuple[Path, Path]:
        base = self.workdir / "experiments" / f"{idea.id:05d}"
        return base / "code", base / "logs"

    def _fresh_workspace(self, idea: IdeaRecord) -> Path:
        """A pristine copy of the environment for the idea. Failing to make one is the machine's fault
        (disk full, workdir not writable), never the idea's: the run stops."""
        workspace, _ = self._paths(idea)
        check_free_space(self.workdir, f"copying the environment for experiment {idea.id}")
        try:
            if workspace.exists():
                shutil.rmtree(workspace)
            self.copies.copy(workspace)
        except (OSError, shutil.Error) as exc:
            raise RunFault(f"cannot copy the environment to {workspace}: {copy_error(exc)}") from exc
        return workspace

    async def _process_unchecked(self, idea: IdeaRecord) -> None:
        if idea.status is Status.PROPOSED and idea.kind != IdeaKind.BASELINE.value:
            if self._stopping:
                return
            idea = await self._implement(idea)
            if idea.status is not Status.READY:  # unimplementable, or put back by a stop: nothing to run
                return
            workspace, _ = self._paths(idea)  # holds the accepted change
        else:  # the baseline, or an idea made ready before a restart
            rebuilt = self._rebuild_workspace(idea)
            if isinstance(rebuilt, str):  # the environment changed under the stored change: it never ran
                self._finish(idea, Status.UNIMPLEMENTABLE, None, rebuilt)
                return
            workspace = rebuilt
        task = asyncio.current_task()
        assert task is not None
        self._executing.add(task)
        try:
            await self._execute(idea, workspace)
        finally:
            self._executing.discard(task)

    def _rebuild_workspace(self, idea: IdeaRecord) -> Path | str:
        """A fresh copy of the environment with the idea's stored, accepted change applied.

        The change was accepted against the environment as it was then; when the environment's files have
        changed since (between a stop and a resume), it may no longer apply. That is the idea's outcome
        (the reason, returned as a string), not a crash of its experiment.
        """
        workspace = self._fresh_workspace(idea)
        if idea.applied_diff:
            result = apply_edit(workspace, idea.applied_diff)
            if not result.ok:
                return f"its accepted code change no longer applies to the environment on resume: {result.error}"
            write_changes(workspace, result.changes)
        return workspace

    async def _implement(self, idea: IdeaRecord) -> IdeaRecord:
        """Ask for a change; when one is accepted it is written into the idea's workspace (status READY)."""
        async with self._implement_slots:
            if self._stopping:
                return idea
            self.store.update_idea(idea.id, status=Status.IMPLEMENTING)
            workspace = await asyncio.to_thread(self._fresh_workspace, idea)  # copying blocks: off the loop
            proposal = IdeaProposal(idea.text, idea.payload.get("diff"), idea.payload)
            try:
                impl = await self.implementer.implement(self.manifest, idea.id, proposal, workspace)
            except StopRun as stop:
                self.store.update_idea(idea.id, status=Status.PROPOSED)
                self._stop(str(stop) or "stop requested")
                return self.store.get_idea(idea.id)
        for attempt in impl.attempts:
            self.store.add_code_change(
                idea.id, attempt.attempt, attempt.sample, attempt.fmt, attempt.text, attempt.outcome, attempt.error
            )
        if not impl.ok:
            self._finish(idea, Status.UNIMPLEMENTABLE, None, impl.reason or "no acceptable code change")
            return self.store.get_idea(idea.id)
        write_changes(workspace, impl.changes)
        shown = set(self.manifest.files.shown) | {c.path for c in impl.changes}
        final = diff_trees(self.manifest.root, workspace, sorted(shown))
        self.store.update_idea(idea.id, status=Status.READY, applied_diff=impl.applied_diff, final_diff=final)
        return self.store.get_idea(idea.id)

    async def _execute(self, idea: IdeaRecord, workspace: Path) -> None:
        _, log_root = self._paths(idea)
        job_key = f"i{idea.id}-a{idea.attempts + 1}"
        log_dir = log_root / job_key
        self.store.add_job(
            idea.id, job_key, self.manifest.run.command, str(workspace),
            str(log_dir / "stdout.log"), str(log_dir / "stderr.log"),
        )

        def started(start: JobStart) -> None:
            try:
                self.store.job_started(job_key, start.started_at, start.gpu_ids, start.pid)
                self.store.update_idea(idea.id, status=Status.RUNNING, started_at=start.started_at)
            except RunFault as fault:  # not raised into the backend: the run stops and its close ends the job
                self._fault(fault)
                return
            self.on_event(SearchEvent("started", idea.epoch, idea.id, Status.RUNNING, text=idea.text))

        outcome = await run_job(self.backend, self.manifest, workspace, job_key, log_dir, on_start=started)
        shared_changed = self.copies.changed(workspace)
        if shared_changed and outcome.status is not Status.CANCELLED:
            reason = f"shared read-only file(s) changed during the run: {', '.join(shared_changed)}"
            outcome = replace(outcome, status=Status.TAMPERED, metric=None, reason=reason)
        self._record_outcome(idea, job_key, outcome)

    def _record_outcome(self, idea: IdeaRecord, job_key: str, outcome: Outcome) -> None:
        if outcome.status is Status.CANCELLED:  # the orchestrator is shutting down: run it again on resume
            self.store.job_finished(job_key, time.time(), None, False, "abandoned", "interrupted")
            self.store.update_idea(idea.id, status=Status.READY, started_at=None)
            return
        if outcome.status is not Status.OK:
            # a job that failed on a full disk says nothing about its idea: not judged, run again on resume
            check_free_space(self.workdir, f"judging experiment {idea.id} (its job ended {outcome.status.value})")
        result = outcome.result
        job_end = JobEnd(result.finished_at, result.exit_code, result.timed_out, outcome.status.value, result.error)
        is_baseline = idea.epoch == BASELINE_EPOCH
        # status, metric, job end, metric values and (for the baseline) the run's baseline: one transaction
        self.store.finish_idea(
            idea.id, outcome.status, outcome.metric, outcome.reason, time.time(),
            job_key=job_key, values=outcome.values, job_end=job_end, baseline=is_baseline,
        )
        if is_baseline and outcome.status is Status.OK:
            self.baseline = outcome.metric
        self.on_event(SearchEvent("finished", idea.epoch, idea.id, outcome.status, outcome.metric, idea.text))

    def _finish(self, idea: IdeaRecord, status: Status, metric: float | None, reason: str) -> None:
        self.store.finish_idea(idea.id, status, metric, reason, time.time())
        self.on_event(SearchEvent("finished", idea.epoch, idea.id, status, metric, idea.text))

    def _cancel_unstarted(self) -> None:
        if not self._stopping:
            return
        for idea in self.store.ideas(self.run_id, statuses=[Status.PROPOSED.value]):
            self._finish(idea, Status.CANCELLED, None, f"run stopped before this idea ran: {self._stop_reason}")

