"""A live summary of a running search for the terminal: a progress bar and one line per result."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from idealab.manifest import MetricSpec
from idealab.search.loop import SearchEvent
from idealab.status import Status


class LiveDisplay:
    def __init__(self, console: Console, metric: MetricSpec, total: int, quiet: bool = False) -> None:
        self.console = console
        self.metric = metric
        self.counts: dict[str, int] = {}
        self.running = 0
        self.best: float | None = None
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[summary]}", markup=False),  # holds the manifest's metric name
            console=console,
            disable=quiet or not console.is_terminal,
        )
        self.task = self.progress.add_task("experiments", total=total, summary="")

    def __enter__(self) -> LiveDisplay:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def on_event(self, event: SearchEvent) -> None:
        if event.kind == "started":
            self.running += 1
        elif event.kind == "finished" and event.status is not None:
            if event.status.has_result:
                self.running = max(0, self.running - 1)
            self.counts[event.status.value] = self.counts.get(event.status.value, 0) + 1
            where = {-1: "baseline", -2: "confirmation"}.get(event.epoch, f"epoch {event.epoch}")
            value = "" if event.metric is None else f" {self.metric.name}={event.metric:.4g}"
            # A Text, not a str: the idea's text is a model's and must never be read as markup
            line = Text(f"#{event.idea_id} {where} {event.status.value}{value}")
            scored = event.status in (Status.OK, Status.TIMEOUT)  # a timeout scores only with a partial metric
            if scored and event.metric is not None and event.epoch >= 0:
                if self.best is None or self.metric.better(event.metric, self.best):
                    self.best = event.metric
                    line.append(" (best so far)", style="green")
            line.append(f"  {(event.text or '')[:90]}")
            self.console.print(line)
            self.progress.advance(self.task)
        elif event.kind == "audit":
            self.console.print(Text(f"#{event.idea_id} audit: {(event.text or '')[:200]}", style="magenta"))
        elif event.kind == "baseline":
            self.console.print(Text(event.text or "", style="bold"))
        elif event.kind == "stopping":
            self.console.print(Text(f"stopping: {event.text}", style="yellow"))
        summary = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        best = "" if self.best is None else f" | best {self.metric.name} {self.best:.4g}"
        self.progress.update(self.task, summary=f"running {self.running} | {summary}{best}")
