"""Results too good to take on trust: the suspect rule and the audit verdicts (docs/statistics.md).

A result is *suspect* when
- it improves on the best value so far (the baseline's mean, then the best result not under suspicion, by
  the mean of its trials) by more than max(JUMP_SDS x the baseline's sd, JUMP_STEPS x the largest
  improvement step the search has made so far, JUMP_FRACTION x the baseline's distance to the metric's
  bound, or its magnitude without a bound) ("jump"); or
- the manifest names the metric's bound (`[metric] bound`, the best value physically possible) and the
  result lies within NEAR_BOUND of the distance from the baseline to the bound ("near-bound"), or beyond
  the bound ("beyond-bound": impossible, never cleared).

A suspect result is confirmed over further seeds (at least `suspect_trials`) and, when the run has an
auditor, reviewed by it; it is *cleared* once every further trial finished ok and the auditor (if any) said
`clean`. Without an auditor a cleared result is also flagged `unreviewed`: re-runs rule out luck, not a
deterministic hack, and the summary says its change was never read. Until cleared, and for good once the
auditor says `hack`, it is never the best, a winner or the confirmed best. The rule reads only the
journal, so every reader (loop, status, report) agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

JUMP_SDS = 10.0  # a jump this many baseline sds beyond the best is never noise (one-sided p < 1e-20)
JUMP_STEPS = 3.0  # ... nor ordinary progress when it is also this many times the largest step so far
JUMP_FRACTION = 0.25  # ... nor a first honest step when it is also this share of the baseline's scale
NEAR_BOUND = 0.05  # within this fraction of the baseline's distance to the bound
MIN_SUSPECT_TRIALS = 2  # a suspect result needs at least this many ok trials, whatever confirm_seeds is

JUMP = "jump"
NEAR_BOUND_FLAG = "near-bound"
BEYOND_BOUND = "beyond-bound"
SUSPECT = "suspect"  # under suspicion and not cleared
CLEARED = "cleared"  # was suspect; confirmation held and the auditor (if any) said clean
HACK = "hack"  # the auditor's verdict: excluded for good
UNREVIEWED = "unreviewed"  # cleared by its re-runs alone: the run has no auditor, so no one read the change


class AuditVerdict(StrEnum):
    CLEAN = "clean"
    HACK = "hack"
    UNSURE = "unsure"


@dataclass(frozen=True)
class Audit:
    """An auditor model's review of an experiment's change (stored in the idea's payload as `audit`)."""

    verdict: AuditVerdict
    reasoning: str
    model: str

    def to_json(self) -> dict[str, str]:
        return {"verdict": self.verdict.value, "reasoning": self.reasoning, "model": self.model}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Audit | None:
        try:
            return cls(AuditVerdict(data["verdict"]), str(data.get("reasoning", "")), str(data.get("model", "")))
        except (KeyError, ValueError, TypeError):
            return None


_WORDS = {
    JUMP: "it improves on the best result so far by far more than the run-to-run noise and the search's "
    "history of improvements suggest",
    NEAR_BOUND_FLAG: "it lies near the best value the metric can physically take",
    BEYOND_BOUND: "it lies beyond the best value the metric can physically take",
}


def describe(reasons: tuple[str, ...]) -> str:
    """Why a result is suspect, in words (for the auditor's prompt)."""
    return "; ".join(_WORDS[r] for r in reasons) or "it was flagged for review"


def suspect_trials(confirm_seeds: int) -> int:
    """Ok trials (the first included) a suspect result needs before it can be cleared."""
    return max(MIN_SUSPECT_TRIALS, confirm_seeds)


def jump_threshold(baseline_sd: float | None, largest_step: float, scale: float = 0.0) -> float | None:
    """How far beyond the best so far a result may land before it is suspect (None: nothing to judge by).
    `scale`: the baseline's distance to the metric's bound, or its magnitude when no bound is declared
    (`jump_scale`)."""
    if not baseline_sd and not largest_step:
        return None  # neither noise nor history to judge by
    threshold = max(JUMP_SDS * (baseline_sd or 0.0), JUMP_STEPS * largest_step, JUMP_FRACTION * scale)
    return threshold if threshold > 0 else None


def jump_scale(baseline: float | None, bound: float | None) -> float:
    """The size of the metric's room for improvement: the baseline's distance to the bound where the
    manifest declares one, else the baseline's magnitude (0 when unknown)."""
    if baseline is None:
        return 0.0
    return abs(baseline - bound) if bound is not None else abs(baseline)


def bound_flag(value: float, bound: float | None, baseline: float | None, minimize: bool) -> str | None:
    """`beyond-bound`, `near-bound` or None for a result against the metric's bound."""
    if bound is None:
        return None
    beyond = value < bound if minimize else value > bound
    if beyond:
        return BEYOND_BOUND
    if baseline is not None and abs(value - bound) <= NEAR_BOUND * abs(baseline - bound):
        return NEAR_BOUND_FLAG
    return None
