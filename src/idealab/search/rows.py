"""The search loop's copy of its run's ideas, so that the journal it consults after every job is not read
back from the database each time.

The loop is the only writer of its run (the workdir lock), and every write of an idea returns the stored
record; the loop hands each one to `put`. Reading ten thousand full rows back per finished job made the
loop's work per job grow with the run (docs/BENCHMARKS.md, "The orchestrator at 10,000 experiments"); with
this copy the database is read once, when the search starts.
"""

from __future__ import annotations

from typing import Any

from idealab.store import IdeaRecord, Store


class IdeaRows:
    def __init__(self, store: Store, run_id: int) -> None:
        self.store, self.run_id = store, run_id
        self._by_id: dict[int, IdeaRecord] | None = None  # read on first use, in (epoch, idx) order
        self._ordered = True

    def put(self, record: IdeaRecord) -> IdeaRecord:
        """Take the record a write returned (an idea added, updated or finished); returns it."""
        if self._by_id is not None:
            self._ordered = self._ordered and record.id in self._by_id
            self._by_id[record.id] = record
        return record

    def all(self) -> list[IdeaRecord]:
        """Every idea of the run, ordered by (epoch, idx), as `Store.ideas` returns them."""
        if self._by_id is None:
            self._by_id = {r.id: r for r in self.store.ideas(self.run_id)}
        elif not self._ordered:
            self._by_id = dict(sorted(self._by_id.items(), key=lambda item: (item[1].epoch, item[1].idx)))
        self._ordered = True
        return list(self._by_id.values())

    def payloads(self) -> list[dict[str, Any]]:
        """Every idea's payload, as `Store.idea_payloads` returns them."""
        return [r.payload for r in self.all()]
