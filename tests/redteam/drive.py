"""Corpus cases through the real executor path: one search of one epoch, as `idealab run` runs it.

The ready-diff implementer (the change guards), the local backend (sandbox, limits, budgets), the runner's
classification and scoring, the store: each case is an idea that arrives with its change. Used by the tests
(tests/test_redteam.py) and by benchmarks/reward_hacks.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.ideators.base import IdeaProposal, IdeationRequest
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.manifest import Manifest, load_manifest, resolve_env
from idealab.runconfig import manifest_to_dict
from idealab.search.journal import Journal
from idealab.search.loop import Search, SearchConfig
from idealab.status import Status
from idealab.store import IdeaRecord, Store
from redteam import corpus

REFUSED = "refused"  # the guards refused the change before anything ran


@dataclass(frozen=True)
class Ended:
    """How one case ended on one side."""

    case: str
    status: str  # a Status value, or "refused" (the guards refused the change before it ran)
    metric: float | None
    flags: tuple[str, ...]
    reason: str | None
    best: bool  # reported as the run's best result

    @property
    def clean_ok(self) -> bool:
        """Ok and never flagged: what every legitimate change must end as."""
        return self.status == Status.OK.value and not self.flags

    @property
    def caught(self) -> bool:
        """Not ok, or ok under suspicion not cleared (or called a hack): never taken as a result."""
        return self.status != Status.OK.value or bool({"suspect", "hack"} & set(self.flags))


class CorpusIdeator:
    """Proposes the corpus's cases, each with its change rendered against this environment's files."""

    name = "redteam"

    def __init__(self, cases: Sequence[corpus.Case], env_root: Path) -> None:
        self.proposals = [IdeaProposal(c.text, corpus.render(c, env_root), {"case": c.name}) for c in cases]

    async def propose(self, manifest: Manifest, request: IdeationRequest) -> list[IdeaProposal]:
        fresh = [p for p in self.proposals if p.text not in request.avoid]
        return fresh[: request.count]


def flags_of(journal: Journal[IdeaRecord], record: IdeaRecord) -> tuple[str, ...]:
    """What qualifies the result (`suspect` and why); none where this version of idealab has no flags."""
    flags = getattr(journal, "flags", None)
    return tuple(flags(record)) if flags is not None else ()


def with_wall_limit(manifest: Manifest, limit_s: float | None) -> Manifest:
    if limit_s is None:
        return manifest
    manifest = replace(manifest, run=replace(manifest.run, timeout_s=max(manifest.run.timeout_s, limit_s)))
    score = getattr(manifest, "score", None)  # the scoring contract's [score], where this version has it
    if score is not None:
        manifest = replace(manifest, score=replace(score, timeout_s=max(score.timeout_s, limit_s)))
    return manifest


def with_budget_extra(manifest: Manifest, extra_s: float) -> Manifest:
    """The training budget raised by `extra_s` (a machine whose Python and torch start slower spends more of
    the budget before training; versions without an executor-measured budget are left as they are)."""
    budget = getattr(manifest, "budget", None)
    if not extra_s or budget is None:
        return manifest
    return replace(manifest, budget=replace(budget, seconds=budget.seconds + extra_s))


def run_cases(
    cases: Sequence[corpus.Case],
    workdir: Path,
    slots: int,
    baseline_runs: int = 3,
    confirm_top: int = 3,
    wall_limit_s: float | None = None,
    budget_extra_s: float = 0.0,
) -> list[Ended]:
    """One search of one epoch over `cases` (all of one environment and preset), with `idealab run`'s trust
    settings by default: the baseline measured 3 times, the top 3 confirmed with 3 seeds.

    `wall_limit_s` raises the wall-clock limits of training and scoring to at least that (a machine shared
    with other work stretches wall-clock time; the training budget itself is left as it is)."""
    env, preset = cases[0].env, cases[0].preset
    manifest = with_budget_extra(with_wall_limit(load_manifest(resolve_env(env), preset), wall_limit_s), budget_extra_s)
    config = SearchConfig(
        epochs=1, ideas_per_epoch=len(cases), batch_size=len(cases), baseline_runs=baseline_runs,
        confirm_top=confirm_top,
    )  # fmt: skip
    store = Store.open(workdir)
    try:
        options = {"seed": config.seed, "confirm_top": config.confirm_top, "confirm_seeds": config.confirm_seeds}
        run = store.create_run(env, str(manifest.root), preset, options, manifest_to_dict(manifest))
        backend = LocalBackend(SlotPool.cpu_only(slots), conceal=[workdir])
        search = Search(
            manifest, store, run.id, backend, CorpusIdeator(cases, manifest.root), ReadyDiffImplementer(), config,
            workdir, job_slots=slots,
        )  # fmt: skip

        async def go() -> None:
            try:
                await search.run()
            finally:
                await backend.close()

        asyncio.run(go())
        if search.internal_errors:
            raise RuntimeError("; ".join(search.internal_errors))
        journal = Journal.load(store, run.id, manifest.metric.goal, None, config.trials_needed)
        reported = {e.id for e in (journal.search_best(), journal.best()) if e is not None}
        ended = []
        for record in store.ideas(run.id):
            name = record.payload.get("case")
            if name is None or record.epoch < 0:
                continue  # the baseline's runs and further trials
            status = REFUSED if record.status is Status.UNIMPLEMENTABLE else record.status.value
            flags = flags_of(journal, record)
            ended.append(Ended(name, status, record.metric, flags, record.reason, record.id in reported))
        return ended
    finally:
        store.close()
