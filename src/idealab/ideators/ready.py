"""The implementer for ideas that arrive with their code change (e.g. from `mutate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from idealab.executor.base import Backend
from idealab.guards import check_changes
from idealab.ideators.base import Attempt, IdeaProposal, Implementation
from idealab.manifest import Manifest
from idealab.patching import apply_edit, diff_texts


class ReadyDiffImplementer:
    """Applies the proposal's own diff through the same applier and guards as an LLM's change."""

    name = "ready-diff"

    def use_backend(self, backend: Backend, scratch: Path) -> None:
        """Nothing to run: a ready change has no preflight here."""

    async def implement(
        self, manifest: Manifest, idea_id: int, proposal: IdeaProposal, workspace: Path
    ) -> Implementation:
        if not proposal.diff:
            return Implementation(False, None, "the idea came without a code change and no implementer is set")
        # `git apply` is a blocking subprocess: in a thread, so that the event loop starts the jobs of ideas
        # already applied while the rest of the epoch is still being applied
        result = await asyncio.to_thread(apply_edit, workspace, proposal.diff)
        error = result.error if not result.ok else check_changes(manifest, result.changes)
        attempt = Attempt(1, 0, proposal.diff, "applied" if error is None else "rejected", error)
        if error is not None:
            return Implementation(False, None, error, (attempt,))
        old = {c.path: c.old_text or "" for c in result.changes}
        new = {c.path: c.new_text or "" for c in result.changes}
        return Implementation(True, diff_texts(old, new), None, (attempt,), result.changes)
