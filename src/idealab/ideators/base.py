"""The interfaces between the search loop and whoever proposes and implements ideas.

The search loop depends only on these: the built-in `mutate` ideator and the LLM ideator plug in the same
way, and so do the implementers (apply a ready diff, or ask an LLM for one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from idealab.manifest import Manifest
from idealab.patching import FileChange
from idealab.search.evidence import Evidence
from idealab.status import Status

if TYPE_CHECKING:
    from idealab.executor.base import Backend


class IdeaKind(StrEnum):
    BASELINE = "baseline"  # the unmodified environment
    INITIAL = "initial"  # epoch 0: fresh ideas
    EXPLOIT = "exploit"  # refine and combine ideas that beat the baseline
    EXPLORE = "explore"  # new directions, unlike anything tried
    CONFIRM = "confirm"  # a further run of an idea's accepted change with another seed


@dataclass(frozen=True)
class PastIdea:
    """What an ideator may see of an executed idea."""

    id: int
    epoch: int
    text: str
    status: Status
    metric: float | None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IdeationRequest:
    epoch: int
    kind: IdeaKind
    count: int
    history: Sequence[PastIdea]  # exploit: the winners (or the best so far); explore: a sample of past ideas
    avoid: Sequence[str]  # ideas already proposed in this epoch: propose something unlike them
    baseline: float | None
    seed: int  # derive all randomness from this, so a resumed epoch proposes the same ideas
    # Exploit: True when every idea in `history` beat the baseline; False when none did (or the baseline is
    # unknown) and `history` holds the best that ran, so a prompt never claims a win that did not happen.
    history_beat_baseline: bool = False
    # The payloads of every idea proposed in the run so far (all epochs), for ideators that can tell a repeat
    # from its payload (mutate's knob values)
    proposed: Sequence[Mapping[str, Any]] = ()
    # The baseline's measured repeats and the shown ideas' further trials: labels use confirmed means and
    # say "unconfirmed (1 run)" or "inside the noise floor" where that is the truth.
    evidence: Evidence = field(default_factory=Evidence)


@dataclass(frozen=True)
class IdeaProposal:
    text: str
    diff: str | None = None  # a ready code change (mutate); None: the implementer writes one
    payload: Mapping[str, Any] = field(default_factory=dict)


class Ideator(Protocol):
    name: str

    async def propose(self, manifest: Manifest, request: IdeationRequest) -> list[IdeaProposal]:
        """Up to `request.count` new ideas (fewer is allowed; the loop asks again)."""
        ...


@dataclass(frozen=True)
class Attempt:
    """One candidate code change and what became of it (stored for audit)."""

    attempt: int
    sample: int
    text: str  # what was produced (the diff or edit blocks as written)
    outcome: str  # "applied" | "rejected"
    error: str | None = None
    fmt: str = "diff"


@dataclass(frozen=True)
class Implementation:
    ok: bool
    applied_diff: str | None  # a clean diff of the accepted change (None when not ok)
    reason: str | None  # why no acceptable change could be made
    attempts: tuple[Attempt, ...] = ()
    changes: tuple[FileChange, ...] = ()  # the accepted change, file by file (old and new text)


class Implementer(Protocol):
    name: str

    def use_backend(self, backend: Backend, scratch: Path) -> None:
        """Run any checks of a change (preflight) as jobs of the run's `backend`, their copies under `scratch`."""
        ...

    async def implement(
        self, manifest: Manifest, idea_id: int, proposal: IdeaProposal, workspace: Path
    ) -> Implementation:
        """Produce an acceptable change for `proposal`, checked against `workspace` (a pristine copy).

        Must not write into `workspace`; the loop writes the accepted change.
        """
        ...
