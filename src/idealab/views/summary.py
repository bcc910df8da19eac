"""Per-epoch numbers of a run: the search curve, completion by status, and cost and compute."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import fmean

from idealab.views.data import Experiment, RunSnapshot


@dataclass(frozen=True)
class EpochRow:
    epoch: int
    proposed: int  # ideas stored in the epoch
    implemented: int  # with an accepted code change
    ran: int  # with a job that started
    ok: int
    statuses: dict[str, int]  # how many ideas are in each status now
    best: float | None  # best metric of the epoch's ok experiments
    best_id: int | None
    best_low: float | None  # the best's interval, once results are confirmed (see data.Measured)
    best_high: float | None
    mean: float | None  # mean metric of the epoch's ok experiments
    best_so_far: float | None  # best of all epochs up to this one
    llm_cost_usd: float  # ideation calls placed in this epoch plus the implementer calls of its ideas
    gpu_hours: float
    job_hours: float
    cum_llm_cost_usd: float
    cum_gpu_hours: float
    cum_job_hours: float


def epoch_rows(snap: RunSnapshot) -> list[EpochRow]:
    last = max([e.epoch for e in snap.experiments] + [c.epoch for c in snap.ideation], default=-1)
    by_epoch: dict[int, list[Experiment]] = defaultdict(list)  # grouped once: a run has hundreds of epochs
    for e in snap.experiments:
        by_epoch[e.epoch].append(e)
    ideation_cost: dict[int, float] = defaultdict(float)
    for c in snap.ideation:
        ideation_cost[c.epoch] += c.cost_usd
    # judged once over the whole run, as the search judges them: a result's suspicion depends on every
    # earlier epoch (the best so far, the steps), so an epoch alone cannot tell
    journal = snap.journal
    ok_by_epoch: dict[int, list[Experiment]] = defaultdict(list)
    for e in journal.ok():
        ok_by_epoch[e.epoch].append(e)
    best_of: dict[int, Experiment] = {}
    for e in journal.trusted():  # best first
        best_of.setdefault(e.epoch, e)
    rows: list[EpochRow] = []
    best_so_far: float | None = None
    cum_cost = cum_gpu = cum_job = 0.0
    for epoch in range(last + 1):
        group = by_epoch.get(epoch, [])
        ok, best = ok_by_epoch.get(epoch, []), best_of.get(epoch)
        best_value = None if best is None else best.metric
        if best_value is not None and (best_so_far is None or snap.goal.better(best_value, best_so_far)):
            best_so_far = best_value
        cost = sum(e.llm.cost_usd for e in group) + ideation_cost.get(epoch, 0.0)
        gpu = sum(e.gpu_hours for e in group)
        job = sum(e.job_hours for e in group)
        cum_cost, cum_gpu, cum_job = cum_cost + cost, cum_gpu + gpu, cum_job + job
        rows.append(
            EpochRow(
                epoch=epoch,
                proposed=len(group),
                implemented=sum(1 for e in group if e.implemented),
                ran=sum(1 for e in group if e.ran),
                ok=len(ok),
                statuses=dict(Counter(e.status.value for e in group)),
                best=best_value,
                best_id=None if best is None else best.id,
                best_low=None if best is None else best.measured.low,
                best_high=None if best is None else best.measured.high,
                mean=fmean(float(e.metric or 0.0) for e in ok) if ok else None,
                best_so_far=best_so_far,
                llm_cost_usd=cost,
                gpu_hours=gpu,
                job_hours=job,
                cum_llm_cost_usd=cum_cost,
                cum_gpu_hours=cum_gpu,
                cum_job_hours=cum_job,
            )
        )
    return rows


def totals(snap: RunSnapshot) -> dict[str, float]:
    """The whole run, the baseline's job included."""
    everyone: list[Experiment] = [*snap.experiments, *([snap.baseline_experiment] if snap.baseline_experiment else [])]
    return {
        "llm_cost_usd": sum(e.llm.cost_usd for e in everyone) + sum(c.cost_usd for c in snap.ideation),
        "gpu_hours": sum(e.gpu_hours for e in everyone),
        "job_hours": sum(e.job_hours for e in everyone),
        "experiments": len(snap.experiments),
    }
