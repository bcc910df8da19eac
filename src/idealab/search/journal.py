"""The journal of a run: its experiments as one list of typed records, with the views every reader needs.

The status report, the search loop, the mutate ideator and the prompts all ask the same questions (which
experiments ran, which finished ok, which beat the baseline, which is best); they ask them here, so the
answers agree and respect the metric's direction. A journal holds store records (`IdeaRecord`) or what an
ideator was shown of them (`PastIdea`): anything with an epoch, a status and a metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from idealab.manifest import Goal
from idealab.status import Status
from idealab.store import IdeaRecord, Store

BASELINE_EPOCH = -1  # the unmodified environment's run is stored as an idea of this epoch


class Entry(Protocol):
    @property
    def epoch(self) -> int: ...

    @property
    def status(self) -> Status: ...

    @property
    def metric(self) -> float | None: ...


E = TypeVar("E", bound=Entry)


class Verdict(StrEnum):
    """How an experiment that finished ok compares with the baseline."""

    BEATS = "beats the baseline"
    EQUAL = "equal to the baseline"
    WORSE = "worse than the baseline"
    UNKNOWN = "baseline unknown"


@dataclass(frozen=True)
class Journal(Generic[E]):
    entries: tuple[E, ...]
    goal: Goal
    baseline: float | None  # the baseline's metric; None while unknown (not run yet, or it failed)

    @classmethod
    def of(cls, entries: Iterable[E], goal: Goal, baseline: float | None) -> Journal[E]:
        return cls(tuple(entries), goal, baseline)

    @staticmethod
    def load(store: Store, run_id: int, goal: Goal, baseline: float | None) -> Journal[IdeaRecord]:
        return Journal(tuple(store.ideas(run_id)), goal, baseline)

    def before(self, epoch: int) -> Journal[E]:
        """The journal as it stood for an epoch: only entries of earlier epochs."""
        return Journal(tuple(e for e in self.entries if e.epoch < epoch), self.goal, self.baseline)

    @property
    def experiments(self) -> list[E]:
        """Every idea of the search proper (the baseline run excluded)."""
        return [e for e in self.entries if e.epoch > BASELINE_EPOCH]

    def in_epoch(self, epoch: int) -> list[E]:
        return [e for e in self.entries if e.epoch == epoch]

    def with_result(self, epoch: int | None = None) -> list[E]:
        """Experiments whose job ran and ended (ok, crashed, timed out, invalid, tampered)."""
        pool = self.experiments if epoch is None else self.in_epoch(epoch)
        return [e for e in pool if e.status.has_result]

    def ok(self) -> list[E]:
        """The scored experiments: ok, or timed out with a partial metric (`metric.partial_on_timeout`;
        only such a timeout carries a metric)."""
        return [e for e in self.experiments if _scored(e)]

    def ranked(self) -> list[E]:
        """The ok experiments, best first (ties keep their order)."""
        return sorted(self.ok(), key=lambda e: self.goal.rank_key(_value(e)))

    def best(self) -> E | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def verdict(self, entry: E) -> Verdict | None:
        """None for an entry that was not scored (see `ok`)."""
        if not _scored(entry) or entry.metric is None:
            return None
        if self.baseline is None:
            return Verdict.UNKNOWN
        if self.goal.better(entry.metric, self.baseline):
            return Verdict.BEATS
        return Verdict.WORSE if self.goal.better(self.baseline, entry.metric) else Verdict.EQUAL

    def beats_baseline(self, entry: E) -> bool:
        return self.verdict(entry) is Verdict.BEATS

    def winners(self) -> list[E]:
        """The ok experiments that beat a known baseline, best first."""
        return [e for e in self.ranked() if self.beats_baseline(e)]

    def counts(self) -> dict[str, int]:
        """Experiments per status."""
        counts: dict[str, int] = {}
        for entry in self.experiments:
            counts[entry.status.value] = counts.get(entry.status.value, 0) + 1
        return counts


def _scored(entry: Entry) -> bool:
    return entry.metric is not None and entry.status in (Status.OK, Status.TIMEOUT)


def _value(entry: Entry) -> float:
    assert entry.metric is not None  # only ok entries with a metric are ranked
    return entry.metric
