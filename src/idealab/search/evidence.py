"""What a run measured beyond each idea's first result: the baseline's repeats and the ideas' further trials.

Kept apart from the journal so the ideators' request (which carries it) needs nothing of the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from idealab.search.suspect import Audit
from idealab.status import Status


@dataclass(frozen=True)
class Trial:
    """One run of an idea's code (its first run, or a confirmation run with another seed)."""

    seed: int | None  # the IDEALAB_SEED the job got (None: not recorded, e.g. a run made before seeds)
    status: Status
    metric: float | None


@dataclass(frozen=True)
class Evidence:
    baseline_values: tuple[float, ...] = ()  # ok metrics of the measured baseline repeats
    trials: Mapping[int, tuple[Trial, ...]] = field(default_factory=dict)  # idea id -> all its trials, first first
    # Ok trials an idea needs before its result counts (and may be called a win). 1: the single-run
    # behaviour (no confirmation), where one result is compared with the baseline directly.
    confirm_seeds: int = 1
    bound: float | None = None  # the metric's bound (`[metric] bound`): the best value physically possible
    auditor: str | None = None  # the run's auditor model; with one, a suspect result needs its `clean`
    audits: Mapping[int, Audit] = field(default_factory=dict)  # idea id -> the auditor's verdict


def trial_seed(run_seed: int, epoch: int, idx: int, trial: int) -> int:
    """The IDEALAB_SEED of one run: trial `trial` of the idea at (epoch, idx). Below 2**31, so any
    framework's seeding accepts it; stable, so a resumed job gets the seed its first attempt got."""
    digest = hashlib.sha256("/".join(map(str, (run_seed, "job-seed", epoch, idx, trial))).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


@dataclass(frozen=True)
class ReusedBaseline:
    """Baseline repeats measured by an earlier run (`--reuse-baseline`): stored in the new run as ok
    baseline trials marked reused, so its database holds its own evidence."""

    source: str  # the earlier run's work directory
    metrics: tuple[float, ...]  # the ok repeats' metrics, in the earlier run's order
    seeds: tuple[int | None, ...]  # the seeds they ran with
    source_ids: tuple[int, ...]  # their experiment ids in the earlier run
