"""The execution-guided search loop.

Epoch 0 samples N ideas; epoch t >= 1 splits N into exploit and explore. Everything is event-driven: an
idea's job is submitted the moment its code change is ready (the backend holds it until a slot is free),
and the next epoch's ideation starts once a configurable fraction of the current epoch has results.
Every step is written to the store first, so a killed orchestrator resumes without losing or repeating work.

Results are made trustworthy here (docs/statistics.md): the unmodified environment runs first,
`baseline_runs` times with different seeds; every job gets its own seed (IDEALAB_SEED); an idea that
enters the current top `confirm_top` is run again with further seeds until it has `confirm_seeds`
results. Baseline repeats and confirmation runs are ordinary jobs (stored as ideas of their own epochs,
so they resume like any other) and take free slots before new ideas' jobs.
When the machine fails instead of an idea (disk full, database locked or unreadable: a `RunFault`), the
search stops at once: in-flight work is cancelled, no idea is blamed, and `run()` raises the fault; a
resume continues from the committed state.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import random
import shutil
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from idealab.errors import RunFault, StopRun, storage_fault
from idealab.executor.base import Backend, JobResult, JobStart, OnStart
from idealab.executor.runner import (
    Outcome,
    classify,
    copy_matches_diff,
    copy_omits,
    job_spec,
    prepare_job,
    protected_hashes,
)
from idealab.executor.shared import POOL_DIR, SharedFiles
from idealab.guards import is_static_refusal
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
from idealab.search.evidence import ReusedBaseline, trial_seed
from idealab.search.faults import check_free_space, copy_error, last_sign_of_life
from idealab.search.gate import HIGH, LOW, Claim, JobGate
from idealab.search.journal import BASELINE_EPOCH, CONFIRM_EPOCH, CONFIRM_KIND, Journal, trust_of
from idealab.search.rows import IdeaRows
from idealab.search.schedule import ExploitSchedule
from idealab.search.suspect import Audit, describe, suspect_trials
from idealab.status import IN_FLIGHT, Status
from idealab.store import IdeaRecord, JobEnd, JobRecord, Store


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
    baseline_runs: int = 3  # runs of the unmodified environment, each with its own seed
    baseline_value: float | None = None  # the bar when baseline_runs is 0 (nothing measured)
    confirm_top: int = 3  # ideas in the current top k are confirmed; 0: single-run behaviour
    confirm_seeds: int = 3  # results (seeds) a confirmed idea has, its first run included
    # an earlier run's measured repeats (--reuse-baseline): the first baseline runs, stored as reused
    reused_baseline: ReusedBaseline | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.ideas_per_epoch < 1 or self.batch_size < 1:
            raise ValueError("epochs, ideas_per_epoch and batch_size must be >= 1")
        if self.baseline_runs < 0 or (self.baseline_runs == 0) != (self.baseline_value is not None):
            raise ValueError("baseline_runs must be >= 1, or 0 together with a given baseline_value (and only then)")
        if self.confirm_top < 0 or not 1 <= self.confirm_seeds <= MAX_TRIALS:
            raise ValueError(f"confirm_top must be >= 0 and confirm_seeds in [1, {MAX_TRIALS}]")
        if not 0.0 < self.next_epoch_at <= 1.0:
            raise ValueError("next_epoch_at must be in (0, 1]")

    @property
    def trials_needed(self) -> int:
        """Ok results that make an idea confirmed (1 when confirmation is off)."""
        return self.confirm_seeds if self.confirm_top > 0 else 1


@dataclass(frozen=True)
class SearchEvent:
    # "idea" | "started" | "finished" | "epoch" | "stopping" | "baseline" (all its runs ended) | "audit"
    kind: str
    epoch: int
    idea_id: int | None = None
    status: Status | None = None
    metric: float | None = None
    text: str | None = None


MAX_TRIALS = 99  # confirmation trials of idea i are stored at idx i * 100 + trial


class Reviewer(Protocol):
    """The auditor (`idealab.auditor.Auditor`): a verdict on the change behind a suspect result."""

    model: str
    max_cost_usd: float | None

    async def review(self, manifest: Manifest, idea_id: int, idea: str, diff: str, result: str, why: str) -> Audit: ...


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
        job_slots: int | None = None,
        auditor: Reviewer | None = None,
    ) -> None:
        """`job_slots`: how many jobs the backend runs at once; with it the loop hands free slots to
        baseline and confirmation runs first (None: jobs go to the backend in the order they are ready)."""
        self.manifest = manifest
        self.store = store
        self.run_id = run_id
        self.rows = IdeaRows(store, run_id)  # every idea written below goes through rows.put
        self.backend = backend
        self.ideator = ideator
        self.implementer = implementer
        self.config = config
        self.workdir = workdir
        self.on_event = on_event or (lambda event: None)
        self.auditor = auditor
        self._auditing: set[int] = set()  # ideas whose audit is in flight
        # The bar is always measured in this run (or given explicitly with baseline_runs = 0); the
        # manifest's baseline is only a reference shown beside it.
        self.baseline: float | None = config.baseline_value if config.baseline_runs == 0 else None
        self._gate = JobGate(job_slots)
        self.internal_errors: list[str] = []
        self._stopping = False
        self.fault: RunFault | None = None  # set when the machine failed: the search stops and raises it
        self._faulted = asyncio.Event()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._executing: set[asyncio.Task[None]] = set()  # tasks whose idea's job was handed to the backend
        self._shut_down = False  # set by shutdown(): nothing new starts
        self._scheduled: set[int] = set()  # ideas with a live task
        self._implement_slots = asyncio.Semaphore(config.implement_concurrency)
        # large files are linked read-only from one pool in the workdir, not copied per experiment
        self.copies = SharedFiles(
            manifest.root, workdir / POOL_DIR, manifest.files.editable, exclude=workdir, omit=copy_omits(manifest)
        )

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
        self._resume_confirmations()
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
        self._stopping = self._shut_down = True
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
        """Take over what was in flight when the orchestrator died: a job it had started is handed to the
        backend's `reattach` (a job still running is waited for, one that ended meanwhile keeps its
        result); a job gone without a result, and an idea that was being implemented, start again."""
        for idea in self.store.ideas(self.run_id, statuses=[s.value for s in IN_FLIGHT]):
            adopted = False
            for job in self.store.jobs(idea_id=idea.id):
                if job.finished_at is not None:
                    continue
                handle = None
                if job.backend is not None and job.backend != self.backend.name:
                    raise RunFault(
                        f"job {job.job_key} was started on the {job.backend} backend and may still run there; "
                        f"resume with --backend {job.backend}"
                    )
                if job.handle is not None:  # submitted, perhaps started (the idea may not say so yet)
                    seed = _seed(idea, self.config.seed)
                    spec = job_spec(self.manifest, job.workspace, job.job_key, job.stdout_path.parent, seed)
                    handle = await self.backend.reattach(spec, job.handle)
                if handle is not None:
                    self._adopt(idea, job, handle)
                    adopted = True
                    continue
                # A job found gone ended at its logs' last write, not now: the time the orchestrator was
                # down (or hung on a full disk) is not compute.
                ended = last_sign_of_life(job)
                self.store.job_finished(job.job_key, ended, None, False, "abandoned", "orchestrator restarted")
            if adopted:
                continue
            if idea.status is Status.IMPLEMENTING:
                self.rows.put(self.store.update_idea(idea.id, status=Status.PROPOSED))
            elif idea.status is Status.RUNNING:
                self.rows.put(self.store.update_idea(idea.id, status=Status.READY, started_at=None))

    def _adopt(self, idea: IdeaRecord, job: JobRecord, handle: str) -> None:
        """Wait (in a task of the idea's own, holding a job slot) for a job an earlier orchestrator started."""
        self._scheduled.add(idea.id)  # the epochs must not run it again meanwhile
        claim = self._gate.claim(HIGH)  # claimed before any new work: the job holds its slot already
        task = asyncio.create_task(self._process(idea, claim, lambda: self._wait_adopted(idea, job, handle, claim)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._scheduled.discard(idea.id))
        self.on_event(SearchEvent("started", idea.epoch, idea.id, Status.RUNNING, text=idea.text))

    async def _wait_adopted(self, idea: IdeaRecord, job: JobRecord, handle: str, claim: Claim) -> None:
        async with claim:
            task = asyncio.current_task()
            assert task is not None
            self._executing.add(task)  # on shutdown it records its job's end like any running one
            try:
                result = await self.backend.wait(handle)
                await self._judge(idea, job.job_key, job.workspace, result)
            finally:
                self._executing.discard(task)
        idea = self.rows.put(self.store.get_idea(idea.id))
        if idea.status is Status.READY and not self._shut_down:  # stopped without a verdict: run it again
            await self._process_unchecked(idea, None)

    def _start_baseline(self) -> None:
        run = self.store.get_run()
        if self.config.baseline_runs == 0:
            if run is not None and run.baseline_metric is None:
                self.store.set_baseline(self.run_id, self.baseline, "given", "given with --baseline-value")
            return
        reused = self.config.reused_baseline
        n_reused = 0 if reused is None else min(len(reused.metrics), self.config.baseline_runs)
        for k in range(self.config.baseline_runs):
            if reused is not None and k < n_reused:
                self._store_reused(k, reused)
                continue
            seed = trial_seed(self.config.seed, BASELINE_EPOCH, k, 0)
            text = f"Baseline: the unmodified environment (run {k + 1} of {self.config.baseline_runs})."
            idea = self.rows.put(
                self.store.add_idea(
                    self.run_id, BASELINE_EPOCH, k, IdeaKind.BASELINE.value, text, "baseline", {"seed": seed}
                )
            )
            self._schedule(idea)
        journal = self._journal()
        self.baseline = journal.baseline
        if reused is not None and n_reused:
            measured = len(journal.evidence.baseline_values)
            reason = f"mean of {measured} measured runs ({n_reused} reused from {reused.source})"
            self.store.set_baseline(self.run_id, self.baseline, Status.OK.value, reason)
            if self._baseline_settled():
                self.on_event(SearchEvent("baseline", BASELINE_EPOCH, text=_noise_text(journal, reused.source)))

    def _store_reused(self, k: int, reused: ReusedBaseline) -> None:
        """Repeat k of the baseline, taken from an earlier run: an ok trial marked reused (idempotent: a
        resume finds it stored, or finishes storing it)."""
        source_id = reused.source_ids[k]
        text = f"Baseline: the unmodified environment, reused from {reused.source} (its experiment {source_id})."
        payload = {"seed": reused.seeds[k], "reused_from": reused.source, "source_experiment": source_id}
        idea = self.store.add_idea(self.run_id, BASELINE_EPOCH, k, IdeaKind.BASELINE.value, text, "baseline", payload)
        self.rows.put(idea)
        if not idea.status.terminal:
            reason = f"reused from {reused.source} (experiment {source_id} there): no job ran in this run"
            self.rows.put(
                self.store.finish_idea(idea.id, Status.OK, reused.metrics[k], reason, time.time(), baseline=True)
            )

    def _resume_confirmations(self) -> None:
        """Confirmation runs stored before a restart, and any the top ideas still lack."""
        for trial in self.store.ideas(self.run_id, epoch=CONFIRM_EPOCH):
            self._schedule(trial)
        self._confirm_top()
        self._audit_suspects()

    def _confirm_top(self) -> None:
        """Give every idea in the current top k, and every suspect result, the further runs it lacks (stored
        first, then scheduled)."""
        journal = self._journal()
        wanted = {i.id: (i, self.config.confirm_seeds) for i in journal.top(self.config.confirm_top)}
        if self.config.confirm_top == 0:
            wanted = {}
        # a suspect result is re-run with further seeds whether or not it is in the top k (search/suspect.py)
        for idea in journal.needs_clearing():
            wanted[idea.id] = (idea, max(wanted.get(idea.id, (idea, 0))[1], suspect_trials(self.config.trials_needed)))
        for idea, seeds in wanted.values():
            for n in range(len(journal.estimate(idea).trials), seeds):
                seed = trial_seed(self.config.seed, idea.epoch, idea.idx, n)
                payload = {"confirms": idea.id, "trial": n, "seed": seed}
                text = f"Confirmation run {n + 1} of {seeds} of experiment {idea.id}."
                idx = idea.id * (MAX_TRIALS + 1) + n
                trial = self.store.add_idea(self.run_id, CONFIRM_EPOCH, idx, CONFIRM_KIND, text, "confirm", payload)
                self.rows.put(trial)
                self._schedule(trial)

    def _audit_suspects(self) -> None:
        """Ask the auditor, once each, about the suspect results it has not reviewed (search/suspect.py)."""
        if self.auditor is None:
            return
        journal = self._journal()
        for idea in journal.ok():
            if journal.suspicion(idea) and journal.audit(idea) is None and idea.id not in self._auditing:
                self._auditing.add(idea.id)
                task = asyncio.create_task(self._audit(idea, journal.label(idea, self.manifest.metric.name)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(functools.partial(_forget, self._auditing, idea.id))

    async def _audit(self, idea: IdeaRecord, result: str) -> None:
        assert self.auditor is not None
        cap = self.auditor.max_cost_usd
        if cap is not None and self.store.total_cost(self.run_id) >= cap:
            return  # no audit within the cost cap: the result stays suspect
        journal = self._journal()
        try:
            audit = await self.auditor.review(
                self.manifest, idea.id, idea.text, idea.final_diff or idea.applied_diff or "(no change)", result,
                describe(journal.suspicion(idea)),
            )
            self.rows.put(self.store.set_payload_entry(idea.id, "audit", audit.to_json()))
        except RunFault as fault:
            self._fault(fault)
            return
        except Exception as exc:  # a bug: recorded and reported at the end; the result stays suspect
            detail = "".join(traceback.format_exception(exc))[-2000:]
            self.internal_errors.append(f"audit of idea {idea.id}: {detail}")
            return
        self.on_event(SearchEvent("audit", idea.epoch, idea.id, text=f"{audit.verdict.value}: {audit.reasoning}"))
        async with self._changed:
            self._changed.notify_all()

    # --------------------------------------------------------------------------------------- ideation

    async def _wait_for_gate(self, epoch: int) -> None:
        """Wait until enough of the previous epoch (and every baseline run) has results.

        Confirmation runs are not waited for (that would end the overlap of epochs) unless next_epoch_at
        is 1: the next epoch's ideation sees confirmed means where they exist and "unconfirmed" labels
        where they do not.

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
            # a fully synchronous search (next_epoch_at 1) also waits for confirmation runs, so that the
            # next epoch's ideation (and with one seed, its ideas) does not depend on which finished first
            confirmed = self.config.next_epoch_at < 1.0 or all(
                i.status.terminal for i in self.store.ideas(self.run_id, epoch=CONFIRM_EPOCH)
            )
            return self._stopping or ((results >= needed or settled) and self._baseline_settled() and confirmed)

        async with self._changed:
            await self._changed.wait_for(ready)

    def _journal(self) -> Journal[IdeaRecord]:
        given = self.config.baseline_value if self.config.baseline_runs == 0 else None
        rows = self.rows.all()
        audits = {r.id: r.payload["audit"] for r in rows if r.payload.get("audit") is not None}
        trust = trust_of(self.store.get_run(), audits)
        return Journal.of_records(rows, self.manifest.metric.goal, given, self.config.trials_needed, trust)

    def _baseline_settled(self) -> bool:
        return all(i.status.terminal for i in self.store.ideas(self.run_id, epoch=BASELINE_EPOCH))

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
            journal = self._journal()
            history, beat_baseline = self._history(journal, epoch, kind, free[0])
            request = IdeationRequest(
                epoch=epoch,
                kind=kind,
                count=ask,
                history=history,
                avoid=[i.text for i in existing if i.epoch == epoch],
                baseline=self.baseline,
                seed=derive_seed(self.config.seed, epoch, kind.value, free[0]),
                history_beat_baseline=beat_baseline,
                proposed=self.rows.payloads(),
                evidence=journal.evidence,
            )
            proposals = (await self.ideator.propose(self.manifest, request))[:ask]
            for idx, proposal in zip(free, proposals, strict=False):
                payload = dict(proposal.payload)
                payload["seed"] = trial_seed(self.config.seed, epoch, idx, 0)
                if proposal.diff is not None:
                    payload["diff"] = proposal.diff
                idea = self.rows.put(
                    self.store.add_idea(self.run_id, epoch, idx, kind.value, proposal.text, self.ideator.name, payload)
                )
                self.on_event(SearchEvent("idea", epoch, idea.id, idea.status, text=idea.text))
                self._schedule(idea)
            if len(proposals) < ask:
                shortfalls += 1
                if shortfalls > self.config.ideation_retries:
                    return  # go on with what there is

    def _history(
        self, run: Journal[IdeaRecord], epoch: int, kind: IdeaKind, position: int
    ) -> tuple[list[PastIdea], bool]:
        """The past ideas shown to one ideation request, and whether they all beat the baseline."""
        if kind is IdeaKind.INITIAL:
            return [], False
        rng = random.Random(derive_seed(self.config.seed, "history", epoch, kind.value, position))
        journal = run.before(epoch)
        beat_baseline = False
        if kind is IdeaKind.EXPLOIT:
            pool = journal.winners()
            beat_baseline = bool(pool)
            if not pool:  # nothing beat the baseline yet: refine the best that ran (none under suspicion)
                pool = journal.trusted()[:10]
        else:
            pool = [i for i in journal.experiments if i.status.terminal]
        chosen = rng.sample(pool, k=min(self.config.history_sample, len(pool)))
        return [PastIdea(i.id, i.epoch, i.text, i.status, i.metric, i.payload) for i in chosen], beat_baseline

    # -------------------------------------------------------------------------------------- execution

    def _schedule(self, idea: IdeaRecord) -> None:
        # once per idea: a resume reaches the same row from several places (a collected result's
        # confirmation runs are scheduled during recovery, then again with the stored ones)
        if idea.status.terminal or idea.id in self._scheduled:
            return
        self._scheduled.add(idea.id)
        # Baseline and confirmation runs claim their slot now, before their task first runs, so a slot
        # freed meanwhile waits for them instead of going to a new idea.
        claim = self._gate.claim(HIGH) if idea.epoch < 0 else None
        task = asyncio.create_task(self._process(idea, claim, lambda: self._process_unchecked(idea, claim)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._scheduled.discard(idea.id))

    async def _process(self, idea: IdeaRecord, claim: Claim | None, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` (the idea's processing) so that a fault stops the run and a bug fails only the idea."""
        try:
            await work()
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
            if claim is not None:
                claim.drop()  # the work ended before its job (a no-op when the job ran)
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

    async def _process_unchecked(self, idea: IdeaRecord, claim: Claim | None) -> None:
        if idea.status is Status.PROPOSED and idea.epoch >= 0:
            if self._stopping:
                return
            idea = await self._implement(idea)
            if idea.status is not Status.READY:  # unimplementable, or put back by a stop: nothing to run
                return
            workspace, _ = self._paths(idea)  # holds the accepted change
        else:  # a baseline or confirmation run, or an idea made ready before a restart
            rebuilt = self._rebuild_workspace(idea)
            if isinstance(rebuilt, str):  # the environment changed under the stored change: it never ran
                self._finish(idea, Status.UNIMPLEMENTABLE, None, rebuilt)
                return
            workspace = rebuilt
        await self._execute(idea, workspace, claim or self._gate.claim(LOW))

    def _verified_copy(self, idea: IdeaRecord, workspace: Path) -> Path | None:
        """The copy to run, checked against the stored change once the job holds its slot (while it
        waited, something may have written it: another job without the sandbox, a person). A copy that
        differs is rebuilt from the stored change, so what runs is exactly what the run records; None
        (the idea finished as unimplementable) when even the rebuilt copy does not match."""
        expected = self._expected_diff(idea)
        if expected is None or copy_matches_diff(self.manifest, workspace, expected):
            return workspace
        rebuilt = self._rebuild_workspace(idea)
        if isinstance(rebuilt, str) or not copy_matches_diff(self.manifest, rebuilt, expected):
            why = rebuilt if isinstance(rebuilt, str) else "its copy does not match its stored diff"
            self._finish(idea, Status.UNIMPLEMENTABLE, None, why)
            return None
        return rebuilt

    def _expected_diff(self, idea: IdeaRecord) -> str | None:
        """The diff a run's copy must show against the environment: none for the baseline, the confirmed
        idea's for a confirmation run (None: not recorded, e.g. an idea stored before final diffs)."""
        if idea.epoch == BASELINE_EPOCH:
            return ""
        if idea.epoch == CONFIRM_EPOCH:
            return self.store.get_idea(int(idea.payload["confirms"])).final_diff
        return idea.final_diff

    def _change_of(self, idea: IdeaRecord) -> str | None:
        """The accepted change a run applies: a confirmation run uses its idea's."""
        if idea.epoch == CONFIRM_EPOCH:
            return self.store.get_idea(int(idea.payload["confirms"])).applied_diff
        return idea.applied_diff

    def _rebuild_workspace(self, idea: IdeaRecord) -> Path | str:
        """A fresh copy of the environment with the idea's stored, accepted change applied.

        The change was accepted against the environment as it was then; when the environment's files have
        changed since (between a stop and a resume), it may no longer apply. That is the idea's outcome
        (the reason, returned as a string), not a crash of its experiment.
        """
        workspace = self._fresh_workspace(idea)
        change = self._change_of(idea)
        if change:
            result = apply_edit(workspace, change)
            if not result.ok:
                return f"its accepted code change no longer applies to the environment on resume: {result.error}"
            write_changes(workspace, result.changes)
        return workspace

    async def _implement(self, idea: IdeaRecord) -> IdeaRecord:
        """Ask for a change; when one is accepted it is written into the idea's workspace (status READY)."""
        async with self._implement_slots:
            if self._stopping:
                return idea
            self.rows.put(self.store.update_idea(idea.id, status=Status.IMPLEMENTING))
            workspace = await asyncio.to_thread(self._fresh_workspace, idea)  # copying blocks: off the loop
            proposal = IdeaProposal(idea.text, idea.payload.get("diff"), idea.payload)
            try:
                impl = await self.implementer.implement(self.manifest, idea.id, proposal, workspace)
            except StopRun as stop:
                self.rows.put(self.store.update_idea(idea.id, status=Status.PROPOSED))
                self._stop(str(stop) or "stop requested")
                return self.rows.put(self.store.get_idea(idea.id))
        for attempt in impl.attempts:
            self.store.add_code_change(
                idea.id, attempt.attempt, attempt.sample, attempt.fmt, attempt.text, attempt.outcome, attempt.error
            )
        if not impl.ok:
            reason = impl.reason or "no acceptable code change"
            # the last change offered was refused by the static checks: an explicit status, not a failure to code
            status = Status.REFUSED if is_static_refusal(reason) else Status.UNIMPLEMENTABLE
            self._finish(idea, status, None, reason)
            return self.rows.put(self.store.get_idea(idea.id))
        write_changes(workspace, impl.changes)
        shown = set(self.manifest.files.shown) | {c.path for c in impl.changes}
        final = diff_trees(self.manifest.root, workspace, sorted(shown))
        ready = self.store.update_idea(idea.id, status=Status.READY, applied_diff=impl.applied_diff, final_diff=final)
        return self.rows.put(ready)

    async def _execute(self, idea: IdeaRecord, workspace: Path, claim: Claim) -> None:
        """Run the idea's job holding a ticket of the gate; the ticket is given back only after the result
        is stored and any confirmation runs it calls for are scheduled (so they get the freed slot)."""
        async with claim:
            if self._shut_down:  # the slot came free because the run is stopping: run it on resume
                return
            # a task holding a slot records its job's end on shutdown; one waiting for a slot is cancelled
            verified = self._verified_copy(idea, workspace)  # now: the slot is held, nothing else runs first
            if verified is None:
                return
            task = asyncio.current_task()
            assert task is not None
            self._executing.add(task)
            try:
                await self._execute_holding(idea, verified)
            finally:
                self._executing.discard(task)

    async def _execute_holding(self, idea: IdeaRecord, workspace: Path) -> None:
        _, log_root = self._paths(idea)
        job_key = f"i{idea.id}-a{idea.attempts + 1}"
        log_dir = log_root / job_key
        spec = job_spec(self.manifest, workspace, job_key, log_dir, _seed(idea, self.config.seed))
        # the handle the backend will give the job, stored before it is asked: an orchestrator killed once
        # the engine has the job, before `on_start` stored its handle, leaves no job a resume cannot find
        self.store.add_job(
            idea.id, job_key, self.manifest.run.command, str(workspace),
            str(log_dir / "stdout.log"), str(log_dir / "stderr.log"), self.backend.claim(spec), self.backend.name,
        )  # fmt: skip
        await asyncio.to_thread(prepare_job, self.manifest, workspace, log_dir)
        handle = await self.backend.submit(spec, self._on_start(idea, job_key))
        await self._judge(idea, job_key, workspace, await self.backend.wait(handle))

    def _on_start(self, idea: IdeaRecord, job_key: str) -> OnStart:
        told = False

        def started(start: JobStart) -> None:
            nonlocal told
            try:
                self.store.job_started(
                    job_key, start.started_at, start.gpu_ids, start.pid, start.handle, self.backend.name
                )
                self.rows.put(self.store.update_idea(idea.id, status=Status.RUNNING, started_at=start.started_at))
            except RunFault as fault:  # not raised into the backend: the run stops and its close ends the job
                self._fault(fault)
                return
            if not told:  # a cluster backend tells twice: accepted by its scheduler, then running
                told = True
                self.on_event(SearchEvent("started", idea.epoch, idea.id, Status.RUNNING, text=idea.text))

        return started

    async def _judge(self, idea: IdeaRecord, job_key: str, workspace: Path, result: JobResult) -> None:
        """Classify a finished job (off the event loop: hashing files must not stall the others) and store it."""
        expected = protected_hashes(self.manifest)
        outcome = await asyncio.to_thread(classify, result, self.manifest, workspace, expected)
        shared_changed = self.copies.changed(workspace)
        if shared_changed and outcome.status is not Status.CANCELLED:
            reason = f"shared read-only file(s) changed during the run: {', '.join(shared_changed)}"
            outcome = replace(outcome, status=Status.TAMPERED, metric=None, reason=reason)
        self._record_outcome(idea, job_key, outcome)

    def _record_outcome(self, idea: IdeaRecord, job_key: str, outcome: Outcome) -> None:
        if outcome.status is Status.CANCELLED:  # the orchestrator is shutting down: run it again on resume
            self.store.job_finished(job_key, time.time(), None, False, "abandoned", "interrupted")
            self.rows.put(self.store.update_idea(idea.id, status=Status.READY, started_at=None))
            return
        if outcome.status is not Status.OK:
            # a job that failed on a full disk says nothing about its idea: not judged, run again on resume
            check_free_space(self.workdir, f"judging experiment {idea.id} (its job ended {outcome.status.value})")
        result = outcome.result
        job_end = JobEnd(result.finished_at, result.exit_code, result.timed_out, outcome.status.value, result.error)
        is_baseline = idea.epoch == BASELINE_EPOCH
        # status, metric, job end, metric values and (for the baseline) the run's baseline: one transaction
        finished = self.store.finish_idea(
            idea.id, outcome.status, outcome.metric, outcome.reason, time.time(),
            job_key=job_key, values=outcome.values, job_end=job_end, baseline=is_baseline,
        )
        self.rows.put(finished)
        if is_baseline:
            journal = self._journal()
            self.baseline = journal.baseline
            n = len(journal.evidence.baseline_values)
            reused = self.config.reused_baseline
            source = None if reused is None else reused.source
            if n:  # derived from the repeats (recomputed by every reader): the run's bar is their mean
                reason = f"mean of {n} measured runs" + ("" if source is None else f" (some reused from {source})")
                self.store.set_baseline(self.run_id, self.baseline, Status.OK.value, reason)
            if self._baseline_settled():
                self.on_event(SearchEvent("baseline", BASELINE_EPOCH, text=_noise_text(journal, source)))
        self.on_event(SearchEvent("finished", idea.epoch, idea.id, outcome.status, outcome.metric, idea.text))
        if outcome.status is Status.OK or idea.epoch == CONFIRM_EPOCH:
            self._confirm_top()
            self._audit_suspects()

    def _finish(self, idea: IdeaRecord, status: Status, metric: float | None, reason: str) -> None:
        self.rows.put(self.store.finish_idea(idea.id, status, metric, reason, time.time()))
        self.on_event(SearchEvent("finished", idea.epoch, idea.id, status, metric, idea.text))

    def _cancel_unstarted(self) -> None:
        if not self._stopping:
            return
        for idea in self.store.ideas(self.run_id, statuses=[Status.PROPOSED.value]):
            self._finish(idea, Status.CANCELLED, None, f"run stopped before this idea ran: {self._stop_reason}")


def _forget(pending: set[int], idea_id: int, _: object) -> None:
    pending.discard(idea_id)


def _seed(idea: IdeaRecord, run_seed: int) -> int:
    """The seed of an idea's job (derived again for an idea stored before jobs had seeds)."""
    seed = idea.payload.get("seed")
    return seed if isinstance(seed, int) else trial_seed(run_seed, idea.epoch, idea.idx, 0)


def _noise_text(journal: Journal[IdeaRecord], reused_from: str | None = None) -> str:
    values = journal.evidence.baseline_values
    if not values:
        return "baseline: no run of the unmodified environment finished ok; nothing can be called a win"
    text = f"baseline measured: mean {journal.baseline:.6g} over {len(values)} run(s)"
    if reused_from is not None:
        text += f" (reused from {reused_from})"
    band = journal.noise_band
    if band is not None and journal.baseline_sd is not None:
        text += f", sd {journal.baseline_sd:.3g}, noise floor [{band[0]:.6g}, {band[1]:.6g}]"
    return text

