"""Optional experiment-tracker sinks (`idealab run --track wandb|trackio`): each finished experiment is
logged (status, metric, best so far, idea, cost) to a tracker's dashboard.

Off by default. The tracker's package is imported only when asked for. Offline-safe: wandb runs in
offline mode unless WANDB_MODE says otherwise (sync later with `wandb sync`), trackio stores locally. A
tracker that fails is switched off with a warning; it never stops the search.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from idealab.manifest import MetricSpec
from idealab.search.loop import SearchEvent
from idealab.status import Status
from idealab.store import RunRecord, Store

log = logging.getLogger(__name__)
TRACKERS = ("wandb", "trackio")


class Tracker(Protocol):
    def log(self, row: dict[str, Any], step: int) -> None: ...

    def finish(self) -> None: ...


class _Module:
    """wandb and trackio share the calls used here: init(...), log(row, step=...), finish()."""

    def __init__(self, module: Any, run: Any) -> None:
        self.module, self.run = module, run

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(row, step=step)
        else:
            self.module.log(row, step=step)

    def finish(self) -> None:
        self.module.finish()


def check_tracker(name: str | None) -> None:
    """Fail before the run starts when the tracker is unknown or its package is not installed."""
    if name is None:
        return
    if name not in TRACKERS:
        raise ValueError(f"--track: unknown tracker {name!r}; choose one of: {', '.join(TRACKERS)}")
    if importlib.util.find_spec(name) is None:
        raise ValueError(f"--track {name} needs the {name} package: pip install {name}")


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ValueError(f"--track {name} needs the {name} package: pip install {name}") from exc


def open_tracker(name: str, run: RunRecord, workdir: Path) -> Tracker:
    """Start a tracker run for `run` (a resumed search continues the same tracker run where it can)."""
    check_tracker(name)
    module = _import(name)
    project = os.environ.get(f"{name.upper()}_PROJECT", "idealab")
    label = f"{run.env_name}-{workdir.name}"
    config = {k: v for k, v in run.config.items() if k != "system"} | {"env": run.env_name, "preset": run.preset}
    if name == "wandb":
        # A stable id per work directory: resuming the search resumes the same wandb run.
        run_id = "idealab-" + hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:12]
        handle = module.init(
            project=project, name=label, id=run_id, resume="allow", config=config, dir=str(workdir),
            mode=os.environ.get("WANDB_MODE", "offline"),
        )  # fmt: skip
        return _Module(module, handle)
    module.init(project=project, name=label, config=config, resume="allow")
    return _Module(module, None)


class TrackerSink:
    """Turns the search's `finished` events into tracker rows; the step is the count of finished experiments."""

    def __init__(self, tracker: Tracker, store: Store, run_id: int, metric: MetricSpec) -> None:
        self.tracker, self.store, self.run_id, self.metric = tracker, store, run_id, metric
        done = [i for i in store.ideas(run_id) if i.status.terminal and i.epoch >= 0]
        self.step = len(done)  # a resumed run continues its steps
        ok = [float(i.metric) for i in done if i.status is Status.OK and i.metric is not None]
        self.best: float | None = min(ok, key=metric.rank_key) if ok else None
        self.failure: str | None = None

    def on_event(self, event: SearchEvent) -> None:
        if event.kind != "finished" or event.idea_id is None or event.epoch < 0 or self.failure is not None:
            return
        name = self.metric.name
        if event.status is Status.OK and event.metric is not None:
            if self.best is None or self.metric.better(event.metric, self.best):
                self.best = event.metric
        self.step += 1
        row: dict[str, Any] = {
            "epoch": event.epoch,
            "experiment": event.idea_id,
            "status": event.status.value if event.status else "unknown",
            "ok": int(event.status is Status.OK),
            "idea": event.text or "",
            "llm_cost_usd_total": self.store.total_cost(self.run_id),
        }
        if event.metric is not None:
            row[name] = event.metric
        if self.best is not None:
            row[f"best_{name}"] = self.best
        try:
            self.tracker.log(row, step=self.step)
        except Exception as exc:  # the tracker's own failure (disk, auth, network): keep searching without it
            self.failure = f"{type(exc).__name__}: {exc}"
            log.warning("experiment tracker switched off after an error: %s", self.failure)

    def close(self) -> None:
        try:
            self.tracker.finish()
        except Exception as exc:  # the run's results are in the database either way
            log.warning("experiment tracker did not finish cleanly: %s", exc)
