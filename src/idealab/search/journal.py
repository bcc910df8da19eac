"""The journal of a run: its experiments as one list of typed records, with the views every reader needs.

The status report, the search loop, the mutate ideator and the prompts all ask the same questions (which
experiments ran, which finished ok, which are confirmed, which beat the baseline, which is best); they ask
them here, so the answers agree and respect the metric's direction. A journal holds store records
(`IdeaRecord`) or what an ideator was shown of them (`PastIdea`): anything with an id, an epoch, a status
and a metric (its first, search-time result), plus the run's `Evidence` (baseline repeats, further trials).

Trust rules (docs/statistics.md says why):
- an idea's value is the mean of its ok trials, with a 95% t interval once it has two;
- with confirmation on (`confirm_seeds` > 1) an idea is *confirmed* once it has that many ok trials, and
  it *beats the baseline* only when confirmed and Welch's one-sided t-test against the baseline's measured
  repeats rejects "no better" at 5%; an unconfirmed result is never called a win;
- with confirmation off (`confirm_seeds` == 1) a single result is compared with the baseline's mean, as
  a single-run search does;
- a result inside the baseline's 95% prediction band (where one more baseline run would land) is
  "inside the noise floor";
- a result that improves on the best so far by far more than noise and history suggest, or lies near the
  metric's bound, is suspect (`search/suspect.py`): never the best, a winner or the confirmed best until
  cleared, and never once the auditor calls it a hack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Generic, Protocol, TypeVar

from idealab.manifest import Goal
from idealab.search import stats, suspect
from idealab.search.evidence import Evidence, Trial, trial_seed
from idealab.search.suspect import Audit, AuditVerdict
from idealab.status import Status
from idealab.store import IdeaRecord, IdeaSummary, RunRecord
from idealab.store.reader import RunReads

BASELINE_EPOCH = -1  # the unmodified environment's runs are stored as ideas of this epoch (idx = repeat)
CONFIRM_EPOCH = -2  # confirmation trials of ideas are stored as ideas of this epoch (payload names the idea)
CONFIRM_KIND = "confirm"


class Entry(Protocol):
    @property
    def id(self) -> int: ...

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
    NOT_SIGNIFICANT = "not significantly better than the baseline"
    EQUAL = "equal to the baseline"
    WORSE = "worse than the baseline"
    UNCONFIRMED = "unconfirmed"
    UNKNOWN = "baseline unknown"


@dataclass(frozen=True)
class Estimate:
    """An idea's value from all its trials."""

    trials: tuple[Trial, ...]
    values: tuple[float, ...]  # metrics of the ok trials
    mean: float | None
    ci: tuple[float, float] | None  # 95% t interval of the mean (two or more ok trials)
    confirmed: bool

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Journal(Generic[E]):
    entries: tuple[E, ...]
    goal: Goal
    baseline: float | None  # the bar: the measured repeats' mean, else a given value; None while unknown
    evidence: Evidence = field(default_factory=Evidence)
    # each entry's Estimate and verdict, made once: a listing asks for them several times per entry (value,
    # verdict, p-value, noise floor), ten thousand entries at a time. A journal never changes once made, so
    # the derived lists below (ok, ranked, trusted) are made once too; their callers get copies.
    _estimates: dict[int, Estimate] = field(default_factory=dict, init=False, repr=False, compare=False)
    _verdicts: dict[int, Verdict | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def of(
        cls, entries: Iterable[E], goal: Goal, baseline: float | None, evidence: Evidence | None = None
    ) -> Journal[E]:
        return cls(tuple(entries), goal, baseline, evidence or Evidence())

    @staticmethod
    def load(
        store: RunReads, run_id: int, goal: Goal, given: float | None, confirm_seeds: int = 1
    ) -> Journal[IdeaRecord]:
        """The run's journal. `given`: the baseline value to use when none was measured (--baseline-value)."""
        trust = _trust_of(store, run_id, store.get_run())
        return Journal.of_records(store.ideas(run_id), goal, given, confirm_seeds, trust)

    @staticmethod
    def of_records(
        rows: Sequence[IdeaRecord],
        goal: Goal,
        given: float | None,
        confirm_seeds: int = 1,
        trust: Mapping[str, Any] | None = None,
    ) -> Journal[IdeaRecord]:
        """The journal of a run's stored ideas (every epoch, in (epoch, idx) order), already read; `trust`:
        the suspect rule's inputs (`trust_of`)."""
        further = [r for r in rows if r.epoch < 0]
        return _assemble(rows, further, goal, given, confirm_seeds, _seed_of, trust)

    @staticmethod
    def light(store: RunReads, run: RunRecord, goal: Goal) -> Journal[IdeaSummary]:
        """The journal from listing rows (no payloads or diffs: ten thousand experiments are one light
        query), with the few baseline and confirmation rows read in full. A first run's seed is derived
        as the loop derived it."""
        rows = store.idea_summaries(run.id)
        further = [*store.ideas(run.id, epoch=CONFIRM_EPOCH), *store.ideas(run.id, epoch=BASELINE_EPOCH)]
        run_seed = int(run.config.get("seed") or 0)

        def seed(row: IdeaSummary) -> int:
            return trial_seed(run_seed, row.epoch, row.idx, 0)

        trust = _trust_of(store, run.id, run)
        return _assemble(rows, further, goal, run.baseline_metric, confirm_seeds_of(run.config), seed, trust)

    def before(self, epoch: int) -> Journal[E]:
        """The journal as it stood for an epoch: only experiments of earlier epochs."""
        return Journal(tuple(e for e in self.entries if e.epoch < epoch), self.goal, self.baseline, self.evidence)

    # ---------------------------------------------------------------------------------------- selection

    @property
    def experiments(self) -> list[E]:
        """Every idea of the search proper (baseline repeats and confirmation trials excluded)."""
        return list(self._experiments)

    @cached_property
    def _experiments(self) -> tuple[E, ...]:
        return tuple(e for e in self.entries if e.epoch > BASELINE_EPOCH)

    def in_epoch(self, epoch: int) -> list[E]:
        return [e for e in self.entries if e.epoch == epoch]

    def with_result(self, epoch: int | None = None) -> list[E]:
        """Experiments whose job ran and ended (ok, crashed, timed out, invalid, tampered)."""
        pool = self._experiments if epoch is None else self.in_epoch(epoch)
        return [e for e in pool if e.status.has_result]

    def ok(self) -> list[E]:
        """The scored experiments by their first (search-time) run: ok, or timed out with a partial metric
        (`metric.partial_on_timeout`; only such a timeout carries a metric)."""
        return list(self._ok)

    @cached_property
    def _ok(self) -> tuple[E, ...]:
        return tuple(e for e in self._experiments if _scored(e))

    # ------------------------------------------------------------------------------------------- values

    def estimate(self, entry: E) -> Estimate:
        known = self._estimates.get(entry.id)
        if known is None:
            known = self._estimates[entry.id] = self._estimate(entry)
        return known

    def _estimate(self, entry: E) -> Estimate:
        trials = self.evidence.trials.get(entry.id) or (Trial(None, entry.status, entry.metric),)
        values = tuple(t.metric for t in trials if _scored(t) and t.metric is not None)
        mean = stats.mean(values) if values else None
        needed = max(1, self.evidence.confirm_seeds)
        confirmed = needed > 1 and len(values) >= needed and _scored(entry)
        return Estimate(trials, values, mean, stats.mean_interval(values), confirmed)

    def value(self, entry: E) -> float:
        """An ok experiment's value: the mean of its ok trials (its first result until it has more)."""
        trials = self.evidence.trials.get(entry.id)
        if (trials is None or len(trials) == 1) and entry.metric is not None and _scored(entry):
            return entry.metric  # one result (most ideas): the ranking of ten thousand needs no Estimate each
        mean = self.estimate(entry).mean
        assert mean is not None  # only ok entries have a value
        return mean

    def ranked(self) -> list[E]:
        """The ok experiments by value (confirmed means where they exist), best first."""
        return list(self._ranked)

    @cached_property
    def _ranked(self) -> tuple[E, ...]:
        return tuple(sorted(self._ok, key=lambda e: self.goal.rank_key(self.value(e))))

    def trusted(self) -> list[E]:
        """The ranked experiments that may be reported: none under suspicion (or called a hack)."""
        return list(self._trusted)

    @cached_property
    def _trusted(self) -> tuple[E, ...]:
        return tuple(e for e in self._ranked if not self.excluded(e))

    def best(self) -> E | None:
        trusted = self._trusted
        return trusted[0] if trusted else None

    def search_best(self) -> E | None:
        """The best first (search-time) result: the maximum over many noisy runs, biased towards luck."""
        ok = sorted((e for e in self._ok if not self.excluded(e)), key=lambda e: self.goal.rank_key(_first(e)))
        return ok[0] if ok else None

    def confirmed_best(self) -> E | None:
        confirmed = [e for e in self._trusted if self.estimate(e).confirmed]
        return confirmed[0] if confirmed else None

    def top(self, k: int) -> list[E]:
        """The current top k by value, among ideas none of whose further trials failed (and none the
        auditor called a hack)."""
        steady: list[E] = []
        for e in self._ranked:
            if len(steady) == k:
                break
            if all(_scored(t) or not t.status.terminal for t in self.estimate(e).trials) and not self.hack(e):
                steady.append(e)
        return steady

    # ------------------------------------------------------------------------------------------ suspicion

    @cached_property
    def _suspicions(self) -> Mapping[int, tuple[str, ...]]:
        """Experiment id -> why its first result is suspect, judged in the order the results were made
        against the best result so far that is not itself under suspicion."""
        minimize = self.goal is Goal.MINIMIZE
        sd = self.baseline_sd
        scale = suspect.jump_scale(self.baseline, self.evidence.bound)
        best, largest = self.baseline, 0.0
        found: dict[int, tuple[str, ...]] = {}
        for entry in sorted(self._ok, key=lambda e: e.id):
            first = _first(entry)
            reasons = []
            near = suspect.bound_flag(first, self.evidence.bound, self.baseline, minimize)
            if near is not None:
                reasons.append(near)
            if best is not None and self.goal.better(first, best):
                threshold = suspect.jump_threshold(sd, largest, scale)
                if threshold is not None and abs(first - best) > threshold:
                    reasons.append(suspect.JUMP)
            if reasons:
                found[entry.id] = tuple(reasons)
            if self.hack(entry) or (reasons and not self._cleared(entry, reasons)):
                continue
            value = self.value(entry)
            if best is None or self.goal.better(value, best):
                largest = max(largest, abs(value - best)) if best is not None else largest
                best = value
        return found

    def audit(self, entry: E) -> Audit | None:
        return self.evidence.audits.get(entry.id)

    def hack(self, entry: E) -> bool:
        audit = self.audit(entry)
        return audit is not None and audit.verdict is AuditVerdict.HACK

    def suspicion(self, entry: E) -> tuple[str, ...]:
        """Why the entry's result is suspect (`jump`, `near-bound`, `beyond-bound`); empty when it is not."""
        return self._suspicions.get(entry.id, ())

    def _cleared(self, entry: E, reasons: Sequence[str]) -> bool:
        if suspect.BEYOND_BOUND in reasons:
            return False  # beyond the physically possible: no repeat or review makes it true
        est = self.estimate(entry)
        held = est.n >= suspect.suspect_trials(self.evidence.confirm_seeds) and all(_scored(t) for t in est.trials)
        audit = self.audit(entry)
        reviewed = self.evidence.auditor is None or (audit is not None and audit.verdict is AuditVerdict.CLEAN)
        return held and reviewed

    def cleared(self, entry: E) -> bool:
        reasons = self.suspicion(entry)
        return bool(reasons) and not self.hack(entry) and self._cleared(entry, reasons)

    def excluded(self, entry: E) -> bool:
        """Never reported as the best: called a hack, or suspect and not (yet) cleared."""
        return self.hack(entry) or (bool(self.suspicion(entry)) and not self.cleared(entry))

    def needs_clearing(self) -> list[E]:
        """Suspect experiments that confirmation or the auditor may still clear."""
        return [
            e
            for e in self._ok
            if self.suspicion(e) and not self.cleared(e) and not self.hack(e)
            and suspect.BEYOND_BOUND not in self.suspicion(e)
        ]  # fmt: skip

    def flags(self, entry: E) -> list[str]:
        """What qualifies an experiment's result: why it is suspect, then `hack`, `suspect` or `cleared` (with
        `unreviewed` when no auditor read the change)."""
        flags = list(self.suspicion(entry))
        if self.hack(entry):
            flags.append(suspect.HACK)
        elif flags and self.cleared(entry):
            flags.append(suspect.CLEARED)
            if self.evidence.auditor is None:
                flags.append(suspect.UNREVIEWED)
        elif flags:
            flags.append(suspect.SUSPECT)
        return flags

    # ------------------------------------------------------------------------------------------ baseline

    @cached_property
    def baseline_sd(self) -> float | None:
        return stats.sample_sd(self.evidence.baseline_values)

    @cached_property
    def noise_band(self) -> tuple[float, float] | None:
        """Where one more run of the unmodified code lands 95% of the time (needs two baseline runs)."""
        return stats.prediction_band(self.evidence.baseline_values)

    def p_value(self, entry: E) -> float | None:
        """Welch's one-sided p-value of "this idea is better than the baseline" (None: cannot be tested)."""
        values = self.estimate(entry).values
        higher = self.goal is Goal.MAXIMIZE
        return stats.welch_p(values, self.evidence.baseline_values, self.baseline, higher)

    def inside_noise(self, entry: E) -> bool:
        band = self.noise_band
        if band is None or not _scored(entry):
            return False
        return band[0] <= self.value(entry) <= band[1]

    def verdict(self, entry: E) -> Verdict | None:
        """None for an entry that was not scored (see `ok`)."""
        if entry.id not in self._verdicts:
            self._verdicts[entry.id] = self._verdict(entry)
        return self._verdicts[entry.id]

    def _verdict(self, entry: E) -> Verdict | None:
        if not _scored(entry) or entry.metric is None:
            return None
        if self.baseline is None:
            return Verdict.UNKNOWN
        value = self.value(entry)
        if self.evidence.confirm_seeds > 1:
            if not self.estimate(entry).confirmed:
                return Verdict.UNCONFIRMED
            p = self.p_value(entry)
            if p is not None and p < stats.ALPHA:
                return Verdict.BEATS
            if self.goal.better(value, self.baseline):
                return Verdict.NOT_SIGNIFICANT
        elif self.goal.better(value, self.baseline):
            return Verdict.BEATS
        return Verdict.WORSE if self.goal.better(self.baseline, value) else Verdict.EQUAL

    def beats_baseline(self, entry: E) -> bool:
        return self.verdict(entry) is Verdict.BEATS

    def winners(self) -> list[E]:
        """The ok experiments that beat a known baseline, best first (none under suspicion)."""
        return [e for e in self._trusted if self.beats_baseline(e)]

    def label(self, entry: E, metric_name: str, fmt: str = ".6g") -> str:
        """`loss = 1.5, unconfirmed (1 run), inside the noise floor`, `loss = 1.2 (mean of 3 runs, 95% CI
        1.1 to 1.3), beats the baseline`: the value and everything that qualifies it."""
        est = self.estimate(entry)
        value = self.value(entry)
        score = f"{metric_name} = {value:{fmt}}"
        if entry.status is not Status.OK:  # a timeout scored from what it printed before the limit
            score += ", partial (stopped by the time limit)"
        if est.n > 1:
            interval = "" if est.ci is None else f", 95% CI {est.ci[0]:{fmt}} to {est.ci[1]:{fmt}}"
            score += f" (mean of {est.n} runs{interval})"
        verdict = self.verdict(entry)
        if verdict is Verdict.UNCONFIRMED:
            score += f", unconfirmed ({est.n} run{'s' if est.n != 1 else ''})"
        elif verdict is not None and verdict is not Verdict.UNKNOWN:
            score += f", {verdict.value}"
        if verdict is not Verdict.BEATS and self.inside_noise(entry):
            score += ", inside the noise floor"
        return score

    def counts(self) -> dict[str, int]:
        """Experiments per status."""
        counts: dict[str, int] = {}
        for entry in self._experiments:
            counts[entry.status.value] = counts.get(entry.status.value, 0) + 1
        return counts


def _assemble(
    rows: Sequence[Any],  # IdeaRecords or IdeaSummaries
    further: Sequence[IdeaRecord],
    goal: Goal,
    given: float | None,
    confirm_seeds: int,
    first_seed: Callable[[Any], int | None],
    trust: Mapping[str, Any] | None = None,
) -> Journal[Any]:
    """A journal of `rows` with the evidence of `further` (the full baseline and confirmation rows)."""
    measured = tuple(
        r.metric for r in further if r.epoch == BASELINE_EPOCH and r.status is Status.OK and r.metric is not None
    )
    by_idea: dict[int, list[IdeaRecord]] = {}
    for run in further:
        if run.epoch == CONFIRM_EPOCH:
            by_idea.setdefault(int(run.payload["confirms"]), []).append(run)
    trials: dict[int, tuple[Trial, ...]] = {}
    for idea in rows:
        if idea.epoch > BASELINE_EPOCH:
            first = Trial(first_seed(idea), idea.status, idea.metric)
            more = by_idea.get(idea.id)  # most ideas have none (one in ten thousand reaches the top k)
            if more is None:
                trials[idea.id] = (first,)
            else:
                trials[idea.id] = (first, *(trial_of(t) for t in sorted(more, key=lambda t: t.idx)))
    bar = stats.mean(measured) if measured else given
    return Journal(tuple(rows), goal, bar, Evidence(measured, trials, confirm_seeds, **(trust or {})))


def _trust_of(store: RunReads, run_id: int, run: RunRecord | None) -> dict[str, Any]:
    """The suspect rule's inputs stored with the run: the metric's bound, the auditor and its verdicts."""
    return trust_of(run, store.idea_audits(run_id))


def trust_of(run: RunRecord | None, stored_audits: Mapping[int, Any]) -> dict[str, Any]:
    """The suspect rule's inputs from the run and its ideas' stored `audit` payload entries (idea id ->
    entry), for a caller that holds the ideas already."""
    audits = {i: a for i, data in stored_audits.items() if (a := Audit.from_json(data)) is not None}
    if run is None:
        return {"audits": audits}
    bound = (run.manifest.get("metric") or {}).get("bound")
    auditor = run.config.get("audit_model")
    return {
        "bound": float(bound) if isinstance(bound, int | float) else None,
        "auditor": auditor if isinstance(auditor, str) else None,
        "audits": audits,
    }


def confirm_seeds_of(config: Mapping[str, Any]) -> int:
    """The ok trials a run's ideas need to be confirmed, from its stored options (1: single-run). Runs
    made before confirmation existed have no such options: their results are single runs."""
    if int(config.get("confirm_top") or 0) <= 0:
        return 1
    return int(config.get("confirm_seeds") or 1)


class _Scorable(Protocol):
    @property
    def status(self) -> Status: ...

    @property
    def metric(self) -> float | None: ...


def _scored(entry: _Scorable) -> bool:
    return entry.metric is not None and entry.status in (Status.OK, Status.TIMEOUT)


def trial_of(row: IdeaRecord) -> Trial:
    return Trial(_seed_of(row), row.status, row.metric)


def _seed_of(row: IdeaRecord) -> int | None:
    seed = row.payload.get("seed")
    return seed if isinstance(seed, int) else None


def _first(entry: Entry) -> float:
    assert entry.metric is not None  # only ok entries with a metric are ranked
    return entry.metric
