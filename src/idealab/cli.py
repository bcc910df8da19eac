"""The `idealab` command line."""

from __future__ import annotations

import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from idealab.cli_data import Download, SharedData, data_app, prepare_env
from idealab.errors import RunFault
from idealab.executor.bwrap import SANDBOX_MODES
from idealab.executor.capped_log import DEFAULT_LOG_CAP_BYTES
from idealab.executor.defaults import SLURM_POLL_S
from idealab.manifest import Manifest, ManifestError, builtin_env_names, load_manifest, resolve_env
from idealab.report import RunView, baseline_json, compute_used, ideation_counts, load_view, status_json, write_json
from idealab.search import suspect
from idealab.store import DB_NAME, RunRecord, StoreError
from idealab.store.reader import RunReader
from idealab.views.data import RunSnapshot, opened_snapshot, read_snapshot

# What only `run` and `env check` use (the search, the backends, the run's start-up and tracking) is imported
# in them: `status` and `report` start without it (tests/test_lazy_imports.py).
if TYPE_CHECKING:
    from idealab.executor.backends import BackendChoice
    from idealab.executor.base import Backend
    from idealab.executor.runner import Outcome
    from idealab.executor.slots import SlotPool
    from idealab.runconfig import RunSettings
    from idealab.search.loop import Search
    from idealab.store import Store
    from idealab.tracking import TrackerSink

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Execution-grounded automated AI research.")
env_app = typer.Typer(no_args_is_help=True, help="Research environments: list, check, prepare.")
app.add_typer(env_app, name="env")
app.add_typer(data_app, name="data")
# Markup and emoji codes off: ideas, reasons, logs and paths come from models, jobs and users, and a `[/]`
# in them must print as itself, never crash the run. Styling goes through Text objects instead.
console = Console(stderr=True, soft_wrap=True, markup=False, emoji=False)
out = Console(soft_wrap=True, markup=False, emoji=False)
GPUS_HELP = (
    "GPU ids to use, e.g. 0,1,2, numbered as CUDA_VISIBLE_DEVICES / nvidia-smi number them "
    "(default: those in an already-set CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi reports)."
)


def _fail(message: str) -> typer.Exit:
    console.print(Text.assemble(("error:", "bold red"), " ", message))
    return typer.Exit(2)


def _fault(fault: RunFault, hint: str | None = None) -> typer.Exit:
    """A fault of the machine or the workdir: one line (and a hint), exit status 1, never a traceback."""
    console.print(Text.assemble(("error:", "bold red"), " ", str(fault)))
    if hint:
        console.print(hint)
    return typer.Exit(1)


def _pool(slots: int | None, gpus: str | None, gpus_per_job: int, local: bool = True) -> SlotPool:
    from idealab import startup

    try:
        return startup.slot_pool(slots, gpus, gpus_per_job, local)
    except startup.StartError as exc:
        raise _fail(str(exc)) from None


def _describe(pool: SlotPool) -> str:
    gpu_ids = pool.gpu_ids
    gpu_text = f"GPUs {','.join(map(str, gpu_ids))}" if gpu_ids else "no GPU"
    return f"{gpu_text}, {pool.cpu_slots} CPU slot(s)"


# ------------------------------------------------------------------------------------------------ run


@app.command()
def run(
    env: Annotated[str | None, typer.Option(help="Built-in environment name or a directory with idealab.toml.")] = None,
    preset: Annotated[str | None, typer.Option(help="Named preset of the environment's manifest.")] = None,
    ideator: Annotated[str | None, typer.Option(help="Ideator: mutate (no LLM) or llm.")] = None,
    model: Annotated[str | None, typer.Option(help="LLM as provider:model, e.g. anthropic:claude-opus-4-5.")] = None,
    implementer_model: Annotated[str | None, typer.Option(help="LLM for implementing (default: --model).")] = None,
    audit_model: Annotated[
        str | None, typer.Option(help="LLM (provider:model) that reviews suspect results for reward hacking.")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="Base URL of an OpenAI-compatible server.")] = None,
    keys_file: Annotated[Path | None, typer.Option(help="keys.json with api_key, anthropic_key, ...")] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="Stop new LLM calls once this is spent.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (default 10).")] = None,
    ideas_per_epoch: Annotated[
        int | None, typer.Option(help="Ideas per epoch (default: the environment's, else 80).")
    ] = None,
    workdir: Annotated[Path, typer.Option(help="Run directory (database, copies, logs).")] = Path("runs/latest"),
    slots: Annotated[int | None, typer.Option(help="CPU slots for jobs that need no GPU.")] = None,
    gpus: Annotated[str | None, typer.Option(help=GPUS_HELP)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the search (default 0).")] = None,
    next_epoch_at: Annotated[
        float | None, typer.Option(help="Fraction of an epoch with results before the next epoch's ideation.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Ideas per ideator call (default 10).")] = None,
    exploit_start: Annotated[float | None, typer.Option(help="Exploit share at epoch 1 (default 0.5).")] = None,
    exploit_step: Annotated[
        float | None, typer.Option(help="Added to the exploit share every --exploit-every epochs (default 0.1).")
    ] = None,
    exploit_every: Annotated[int | None, typer.Option(help="Epochs between raises (default 2).")] = None,
    exploit_cap: Annotated[float | None, typer.Option(help="Largest exploit share (default 0.8).")] = None,
    exploit_round_to: Annotated[
        int | None,
        typer.Option(help="Round the exploit count down to a multiple of this in epochs of 20+ ideas (default 10)."),
    ] = None,
    history_sample: Annotated[
        int | None, typer.Option(help="Past ideas shown per exploit/explore request (default 100).")
    ] = None,
    implement_concurrency: Annotated[
        int | None, typer.Option(help="Ideas implemented at the same time (default 10).")
    ] = None,
    llm_option: Annotated[
        list[str] | None,
        typer.Option(help="LLM setting NAME=VALUE, repeatable (e.g. samples=10, implement_mode=sequential)."),
    ] = None,
    baseline_runs: Annotated[
        int | None, typer.Option(help="Runs of the unmodified environment, each its own seed (default 3).")
    ] = None,
    baseline_value: Annotated[
        float | None, typer.Option(help="Use this baseline instead of measuring it (needs --baseline-runs 0).")
    ] = None,
    confirm_top: Annotated[
        int | None, typer.Option(help="Confirm ideas entering the top K with more seeds (default 3; 0: off).")
    ] = None,
    confirm_seeds: Annotated[int | None, typer.Option(help="Results a confirmed idea has (default 3).")] = None,
    reuse_baseline: Annotated[
        Path | None,
        typer.Option(
            help="Reuse the measured baseline repeats of the run in this work directory (same environment "
            "content, preset and hardware; it is only read)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live display; one line per finished experiment.")] = False,
    track: Annotated[
        str | None, typer.Option(help="Also log each finished experiment to wandb or trackio (offline-safe).")
    ] = None,
    allow_changed_settings: Annotated[
        bool, typer.Option(help="Resume even though the LLM settings differ from the run's (the change is recorded).")
    ] = False,
    log_cap_mb: Annotated[
        float, typer.Option(help="Most of a job's stdout (and of its stderr) kept: first and last half.")
    ] = DEFAULT_LOG_CAP_BYTES / 2**20,
    sandbox: Annotated[
        str | None, typer.Option(help="Jobs under bubblewrap: auto (where usable), require, or off.")
    ] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory limit of each job process (MiB).")] = None,
    max_open_files: Annotated[int | None, typer.Option(help="Open-file limit of each job process.")] = None,
    max_file_mb: Annotated[int | None, typer.Option(help="Largest file a job may write (MiB).")] = None,
    max_processes: Annotated[
        int | None, typer.Option(help="Processes and threads of a job at once (needs a pids cgroup).")
    ] = None,
    max_disk_mb: Annotated[
        int | None, typer.Option(help="Disk a job may write, all its files together (MB); over it, it is stopped.")
    ] = None,
    backend_name: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="Where jobs run: local (this machine), slurm or ray (docs/clusters.md). Stored with the run: "
            "a resume without it keeps the stored backend; a new run's default is local.",
        ),
    ] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="Slurm partition of the jobs.")] = None,
    slurm_account: Annotated[str | None, typer.Option(help="Slurm account charged for the jobs.")] = None,
    slurm_qos: Annotated[str | None, typer.Option(help="Slurm QoS of the jobs.")] = None,
    slurm_option: Annotated[
        list[str] | None, typer.Option(help="Further sbatch option, repeatable (e.g. --slurm-option=--exclusive).")
    ] = None,
    slurm_cpus_per_job: Annotated[int | None, typer.Option(help="CPUs of each Slurm job (--cpus-per-task).")] = None,
    slurm_poll_s: Annotated[
        float | None, typer.Option(help=f"Seconds between squeue calls about the jobs (default {SLURM_POLL_S:g}).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="--backend ray: the cluster's dashboard address, e.g. http://head:8265.")
    ] = None,
    ray_num_cpus: Annotated[
        float | None, typer.Option(help="--backend ray: CPUs Ray reserves per job (default 1).")
    ] = None,
    ray_memory_mb: Annotated[
        int | None, typer.Option(help="--backend ray: memory Ray reserves per job (MiB; for scheduling only).")
    ] = None,
) -> None:
    """Run (or resume) a search in WORKDIR. SIGINT or SIGTERM stop it cleanly; run it again to resume."""
    import asyncio

    from idealab import startup
    from idealab.executor.backends import BackendRequest, make_backend, resolve_backend
    from idealab.executor.runner import with_sandbox_options
    from idealab.runconfig import RunOptions, env_defaults
    from idealab.search.live import LiveDisplay
    from idealab.search.loop import Search, SearchEvent
    from idealab.tracking import check_tracker
    from idealab.workdir_lock import WorkdirLock

    workdir = workdir.resolve()
    try:
        check_tracker(track)
        _check_sandbox_option(sandbox)
        request = BackendRequest(
            backend_name,
            {
                "slurm.partition": slurm_partition, "slurm.account": slurm_account, "slurm.qos": slurm_qos,
                "slurm.extra": slurm_option or None, "slurm.cpus_per_job": slurm_cpus_per_job,
                "slurm.poll_s": slurm_poll_s, "ray.address": ray_address, "ray.num_cpus": ray_num_cpus,
                "ray.memory_mb": ray_memory_mb,
            },
            gpus,
        )  # fmt: skip
        # a resume's backend is the stored one: read before anything is created, checked before it is used
        choice, from_store = resolve_backend(request, startup.stored_backend(workdir))
        choice.check_reachable()
    except ValueError as exc:
        raise _fail(str(exc)) from None
    suggested: dict[str, Any] = {}  # the new run's environment's search defaults
    if not (workdir / DB_NAME).exists():  # a new run: check what it needs before creating anything
        if not env:
            raise _fail(f"{workdir} holds no run: give --env to start one")
        if (workdir / "experiments").exists():
            raise _fail(
                f"{workdir} holds experiments but no {DB_NAME}: its run database is gone; idealab will not start "
                "a new run over them (restore the database, or use another --workdir)"
            )
        try:
            new_manifest = load_manifest(resolve_env(env), preset)
        except ManifestError as exc:
            raise _fail(str(exc)) from None
        _pool(slots, gpus, new_manifest.run.gpus, choice.local)
        suggested = env_defaults(new_manifest)
    # The lock comes before the database is opened (a migration writes) and long before the search's
    # recovery, which kills the jobs that a crashed orchestrator left: a live one's jobs are never hit.
    try:
        with ExitStack() as held:
            held.enter_context(WorkdirLock.acquire(workdir))
            given = RunOptions.from_cli(
                env=env, preset=preset, ideator=ideator, model=model, implementer_model=implementer_model,
                base_url=base_url, max_cost_usd=max_cost_usd, epochs=epochs, ideas_per_epoch=ideas_per_epoch,
                seed=seed, next_epoch_at=next_epoch_at, batch_size=batch_size, exploit_start=exploit_start,
                exploit_step=exploit_step, exploit_every=exploit_every, exploit_cap=exploit_cap,
                exploit_round_to=exploit_round_to, history_sample=history_sample,
                implement_concurrency=implement_concurrency, baseline_runs=baseline_runs,
                baseline_value=baseline_value, confirm_top=confirm_top, confirm_seeds=confirm_seeds,
                audit_model=audit_model,
                reuse_baseline=None if reuse_baseline is None else str(reuse_baseline),
            )  # fmt: skip
            try:  # builds and checks everything; a new run is stored only when all of it is sound
                started = startup.start(
                    workdir, given, slots=slots, gpus=gpus, keys_file=keys_file, llm_options=llm_option or [],
                    allow_changed_settings=allow_changed_settings, environment_defaults=suggested,
                    backend=choice,
                )  # fmt: skip
            except startup.StartError as exc:
                raise _fail(str(exc)) from None
            store = held.enter_context(started.store)
            options, manifest, pool = started.options, started.manifest, started.pool
            # the command line's sandbox settings, for the jobs and the preflights (the implementer gets
            # this manifest from the search)
            manifest = with_sandbox_options(
                manifest, sandbox, memory_mb, max_open_files, max_file_mb, max_processes, max_disk_mb
            )
            if from_store:
                console.print(f"backend {choice.describe()}, as stored with the run")
            if started.settings_changed:
                console.print("LLM settings changed (recorded with the run):", style="yellow")
                console.print(started.settings_changed)
            reused = started.reused_baseline
            n_reused = 0 if reused is None else min(len(reused.metrics), options.baseline_runs)
            total = options.epochs * options.ideas_per_epoch + options.baseline_runs - n_reused
            display = LiveDisplay(console, manifest.metric, total, quiet=quiet)
            sink = _tracker_sink(track, store, started.run, manifest, workdir)
            if sink is not None:
                held.callback(sink.close)
            try:
                backend = make_backend(
                    choice, pool, workdir, int(log_cap_mb * 2**20), manifest.run.slurm_options
                )
            except ValueError as exc:
                raise _fail(str(exc)) from None
            # preflight checks are jobs of the run: its slots, its sandbox, its concealment of the workdir
            started.built.implementer.use_backend(backend, workdir / "preflight")

            def on_event(event: SearchEvent) -> None:
                display.on_event(event)
                if sink is not None:
                    sink.on_event(event)

            search = Search(
                manifest, store, started.run.id, backend, started.built.ideator, started.built.implementer,
                options.search_config(reused), workdir, on_event=on_event,
                job_slots=_job_slots(pool, manifest.run.gpus) if choice.local else pool.cpu_slots,
                auditor=started.auditor,
            )
            console.print(
                Text.assemble(
                    ("idealab", "bold"),
                    f" {manifest.name}{f' ({manifest.preset})' if manifest.preset else ''}: "
                    f"{options.epochs} epochs x {options.ideas_per_epoch} ideas, ideator {options.ideator}, "
                    f"{_describe(pool) if choice.local else _describe_cluster(choice, pool)}, workdir {workdir}",
                )
            )
            console.print(_trust_header(options, manifest.metric.baseline, store, n_reused))
            terminated: list[signal.Signals] = []
            with display:
                try:
                    asyncio.run(_run_search(search, backend, terminated))
                except (KeyboardInterrupt, asyncio.CancelledError):
                    terminated.append(signal.SIGINT)  # a Ctrl-C that came before our handler was installed
                except RunFault as exc:  # the machine failed, not an idea: committed state is intact
                    raise _fault(exc, "the run stopped; fix the cause, then run the same command to resume") from None
                if terminated:  # stopped by a signal, whether or not the cancellation reached every await
                    stopped = f"stopped by {terminated[0].name}: state is saved; run the same command again to resume"
                    console.print(stopped, style="yellow")
                    raise typer.Exit(128 + terminated[0])
            _print_summary(store)
            if search.internal_errors:
                console.print(f"{len(search.internal_errors)} internal error(s):", style="bold red")
                for err in search.internal_errors:
                    console.print(err)
                raise typer.Exit(1)
    except RunFault as exc:  # the workdir is locked, read-only or full, the database locked or corrupted
        raise _fault(exc) from None


def _describe_cluster(choice: BackendChoice, pool: SlotPool) -> str:
    return f"backend {choice.name}, {pool.cpu_slots} job(s) at once"


def _check_sandbox_option(sandbox: str | None) -> None:
    if sandbox is not None and sandbox not in SANDBOX_MODES:
        raise ValueError(f"--sandbox: expected one of {', '.join(SANDBOX_MODES)}, got {sandbox!r}")


def _tracker_sink(
    track: str | None, store: Store, run_record: RunRecord, manifest: Manifest, workdir: Path
) -> TrackerSink | None:
    from idealab.tracking import TrackerSink, open_tracker

    if track is None:
        return None
    try:
        return TrackerSink(open_tracker(track, run_record, workdir), store, run_record.id, manifest.metric)
    except ValueError as exc:
        raise _fail(str(exc)) from None


async def _run_search(search: Search, backend: Backend, terminated: list[signal.Signals]) -> None:
    """Run the search; SIGTERM and SIGINT (Ctrl-C) stop it cleanly.

    A stop cancels the search: no new work starts, running jobs get SIGTERM and their grace period
    (`backend.close`), and every idea in flight is left in a state a resume restarts from; ideas being
    implemented are cancelled, which ends their preflight jobs.
    """
    import asyncio

    main = asyncio.current_task()
    assert main is not None

    def on_signal(sig: signal.Signals) -> None:
        # Handled as a loop callback (not mid-bytecode, as asyncio.run's own SIGINT handler would), so the
        # main task is always suspended at an await when it is cancelled; the signal is remembered so the
        # run is reported as stopped even if the search finished meanwhile.
        terminated.append(sig)
        main.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await search.run()
    finally:
        await backend.close()
        await search.shutdown()


def _job_slots(pool: SlotPool, gpus_per_job: int) -> int:
    """How many jobs of this environment the pool runs at once."""
    return max(1, len(pool.gpu_ids) // gpus_per_job) if gpus_per_job else pool.cpu_slots


def _trust_header(options: RunSettings, reference: float | None, store: Store, reused: int = 0) -> str:
    """The bar and how ideas are confirmed; `reused`: baseline repeats taken from an earlier run."""
    if options.baseline_runs == 0:
        bar = f"baseline given: {options.baseline_value} (not measured, no noise floor)"
    else:
        bar = f"baseline: measured {options.baseline_runs} times with different seeds"
        if options.reuse_baseline is not None and reused:
            more = options.baseline_runs - reused
            bar = f"baseline: {reused} run(s) reused from {options.reuse_baseline}" + (
                f", {more} measured here with different seeds" if more > 0 else ""
            )
        try:
            measured = baseline_line(load_view(store))  # a resumed run knows its noise floor already
        except LookupError:
            measured = None
        if measured:
            bar = measured
    ref = f"; reference {reference} (the manifest's, not the bar)" if reference is not None else ""
    confirm = (
        f"confirming the top {options.confirm_top} with {options.confirm_seeds} seeds each"
        if options.confirm_top > 0
        else "no confirmation: single-run results"
    )
    return f"{bar}{ref}; {confirm}"


def _print_summary(store: Store) -> None:
    view = load_view(store)
    journal = view.journal
    unit = view.run.manifest["metric"]["name"]
    out.print(baseline_line(view) or f"baseline {unit}: unknown")
    best, confirmed = journal.search_best(), journal.confirmed_best()
    if best is None:
        out.print("best: no experiment finished ok")
    else:
        # the search-time best is a maximum over noisy single runs (biased towards luck): the confirmed
        # best is the claim; both are shown
        out.print(
            f"search-time best (single run): {best.metric:.6g} (experiment {best.id}, epoch {best.epoch}); "
            f"now {journal.label(best, unit)}"
        )
        out.print(f"search-time best idea: {best.text}")
        if journal.evidence.confirm_seeds > 1:
            if confirmed is None:
                out.print("confirmed best: none (no idea has all its confirmation runs)")
            else:
                out.print(f"confirmed best: experiment {confirmed.id}: {journal.label(confirmed, unit)}")
                out.print(f"confirmed best idea: {confirmed.text}")
    flagged = [e for e in journal.ok() if journal.flags(e)]
    if flagged:  # too good to take on trust (docs/reward_hacking.md): never the best until cleared
        out.print("flagged: " + "; ".join(f"#{e.id} {', '.join(journal.flags(e))}" for e in flagged))
    for e in {x.id: x for x in (best, confirmed) if x is not None}.values():
        if suspect.UNREVIEWED in journal.flags(e):
            out.print(
                f"note: experiment {e.id} was suspect ({', '.join(journal.suspicion(e))}) and is cleared by its "
                "re-runs alone: they rule out luck, not a hack; no auditor read its change (--audit-model): "
                "read its diff in `idealab report` before trusting it"
            )
    counts = journal.counts()
    out.print("experiments: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    compute = compute_used(store)
    parts = ", ".join(f"{name} {c['job_hours']:.3f}/{c['gpu_hours']:.3f}" for name, c in compute["by_purpose"].items())
    out.print(
        f"compute: {compute['job_hours']:.3f} job-hours, {compute['gpu_hours']:.3f} GPU-hours "
        f"(job-/GPU-hours: {parts}); LLM cost: ${store.total_cost(view.run.id):.4f}; seed {view.run.config.get('seed')}"
    )
    ideation = ideation_counts(store, view.run.id)
    if ideation["calls"]:
        out.print(
            f"ideation: {ideation['answers']} answer(s), {ideation['without_ideas']} without a readable idea, "
            f"{ideation['structured']} read as structured output, {ideation['failed_calls']} failed call(s)"
        )


# --------------------------------------------------------------------------------------------- status

TABLE_LIMIT = 100  # experiments in the status table by default (a terminal table of ten thousand takes half a minute)
# ... and in `status --json`: every experiment of a run of the paper's size (10 epochs x 80 ideas and their
# confirmation runs); at ten thousand, listing them all is most of the command's time (docs/BENCHMARKS.md)
JSON_LIMIT = 1000


@app.command()
def status(
    workdir: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/latest"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"Experiments listed, the latest first counted from --offset (0: all). Default: the latest "
            f"{TABLE_LIMIT} in the table, {JSON_LIMIT} in --json.",
        ),
    ] = None,
    offset: Annotated[int, typer.Option(min=0, help="Experiments skipped, counted from the latest.")] = 0,
) -> None:
    """Show a run's baseline, best result and experiments."""
    if not (workdir / DB_NAME).is_file():
        raise _fail(f"{workdir}: no idealab run here (no {DB_NAME})")
    shown = (JSON_LIMIT if as_json else TABLE_LIMIT) if limit is None else limit
    try:
        with RunReader.open(workdir) as store:  # never migrates or writes: safe beside a live run
            data = status_json(store, limit=shown, offset=offset)
    except LookupError as exc:
        raise _fail(f"{workdir}: {exc}") from None
    except RunFault as exc:
        raise _fault(exc) from None
    if as_json:
        write_json(data, sys.stdout)
        listed, total = len(data["experiments"]), data["experiments_total"]
        if listed < total:  # on stderr: stdout stays one JSON document
            console.print(f"status: {listed} of {total} experiments listed (--limit/--offset: pages, --limit 0: all)")
        return
    _print_table(data)


def _print_table(data: dict[str, Any]) -> None:
    metric = data["metric"]
    listed, total = len(data["experiments"]), data["experiments_total"]
    title = f"{data['run']['env']}: {metric['name']} ({metric['goal']})"
    if listed < total:
        title += f", {listed} of {total} experiments listed"
    table = Table(title=title)
    for column in ("id", "epoch", "status", metric["name"], "mean (runs)", "verdict", "idea / reason"):
        table.add_column(column, overflow="fold")
    for e in data["experiments"]:
        value = "" if e["metric"] is None else f"{e['metric']:.4g}"
        mean = "" if e["mean"] is None else f"{e['mean']:.4g} ({sum(t['status'] == 'ok' for t in e['trials'])})"
        verdict = (e["verdict"] or "") + (", inside the noise floor" if e["inside_noise_floor"] else "")
        if e["flags"]:
            verdict += f" [{', '.join(e['flags'])}]"
        detail = Text(e["idea"])
        if e["audit"] is not None:
            detail.append(f"\naudit ({e['audit']['model']}): {e['audit']['verdict']}: {e['audit']['reasoning'][:300]}",
                          style="magenta")  # fmt: skip
        if e["status"] != "ok":
            detail.append("\n" + (e["reason"] or "")[-300:], style="dim")
        table.add_row(str(e["id"]), str(e["epoch"]), e["status"], value, mean, verdict, detail)
    out.print(table)
    if listed < total:
        out.print(f"{total - listed} experiment(s) not listed: --limit N --offset M pages, --limit 0 lists all")
    out.print(_baseline_text(data["baseline"], metric["name"]))
    best, confirmed = data["best"], data["confirmed_best"]
    out.print(
        "search-time best: none"
        if best is None
        else f"search-time best (single run): {best['metric']:.6g} (#{best['id']}) {best['idea']}"
    )
    if data["confirm_seeds"] > 1:
        out.print(
            "confirmed best: none"
            if confirmed is None
            else f"confirmed best: mean {confirmed['mean']:.6g} over {len(confirmed['trials'])} runs, "
            f"95% CI [{_num(confirmed['ci_low'])}, {_num(confirmed['ci_high'])}], "
            f"{confirmed['verdict']} (#{confirmed['id']}) {confirmed['idea']}"
        )

    ideation = data["ideation"]
    if ideation["calls"]:
        out.print(f"ideation: {ideation['answers']} answer(s), {ideation['without_ideas']} without a readable idea")


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.6g}"


def _baseline_text(b: dict[str, Any], name: str) -> str:
    ref = f"; reference {b['reference']:.6g} (manifest)" if b["reference"] is not None else ""
    if b["source"] != "measured":
        return f"baseline {name}: {_num(b['mean'])} ({b['source']}, no noise floor){ref}"
    noise = (
        f", sd {b['sd']:.3g}, noise floor [{b['noise_low']:.6g}, {b['noise_high']:.6g}]" if b["sd"] is not None else ""
    )
    reused = f" ({b['reused']} reused from {b['reused_from']})" if b.get("reused_from") else ""
    return f"baseline {name}: {b['mean']:.6g} measured over {b['n']} run(s){reused}{noise}{ref}"


def baseline_line(view: RunView) -> str | None:
    """The measured baseline with its noise floor, for the run header and summary (None: not yet known)."""
    if view.baseline is None:
        return None
    return _baseline_text(baseline_json(view.journal, view.run), view.run.manifest["metric"]["name"])


# ------------------------------------------------------------------------------ report, serve, export


def _read_snapshot(workdir: Path, with_values: bool = False) -> RunSnapshot:
    try:
        return read_snapshot(workdir, with_values=with_values)
    except (LookupError, StoreError) as exc:
        raise _fail(f"{workdir}: {exc}") from None


@app.command()
def report(
    workdir: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/latest"),
    out_file: Annotated[Path | None, typer.Option("--out", help="HTML file (default WORKDIR/report.html).")] = None,
) -> None:
    """Write a self-contained HTML report of a run (opens from disk, no network)."""
    from idealab.views.html import render_report  # plotting and templates load only for this command

    path = out_file or workdir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with opened_snapshot(workdir) as snap:  # the featured experiments' diffs are read, not all of them
            page = render_report(snap)
    except (LookupError, StoreError) as exc:
        raise _fail(f"{workdir}: {exc}") from None
    path.write_text(page, encoding="utf-8")
    out.print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command()
def serve(
    workdir: Annotated[list[Path] | None, typer.Option(help="Run directory; repeat for several runs.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8765,
    interval: Annotated[float, typer.Option(help="Seconds between the page's update checks.")] = 2.0,
) -> None:
    """A live dashboard of one or more runs, updating while they go (read-only on their databases)."""
    from idealab.views.server import LOOPBACK, bind, create_app, url_of
    from idealab.views.server import serve as serve_app

    workdirs = workdir or [Path("runs/latest")]
    for w in workdirs:
        if not (w / DB_NAME).is_file():
            raise _fail(f"{w}: no idealab run here (no {DB_NAME})")
    if host not in LOOPBACK:
        exposed = f" serving on {host}: anyone who reaches it sees ideas, code and logs"
        console.print(Text.assemble(("warning:", "yellow"), exposed))
    dashboard = create_app([w.resolve() for w in workdirs], int(interval * 1000))
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc}") from None
    # The first line of stdout is the address (with --port 0, the port the system chose).
    print(url_of(sock), flush=True)
    console.print(f"idealab dashboard of {len(workdirs)} run(s); Ctrl-C stops it")
    serve_app(dashboard, sock)


@app.command()
def export(
    workdir: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/latest"),
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for experiments.<format>.")] = Path("export"),
) -> None:
    """Export one record per experiment (idea, diff, lineage, status, metrics, costs) as a dataset."""
    from idealab.views import export as exporter

    if fmt not in exporter.FORMATS:
        raise _fail(f"--format: {fmt!r} is not one of {', '.join(exporter.FORMATS)}")
    rows = exporter.records(_read_snapshot(workdir, with_values=True))
    path = exporter.write(rows, fmt, out_dir)
    out.print(f"exported {len(rows)} experiments to {path}")


# ------------------------------------------------------------------------------------------------ env


@env_app.command("list")
def env_list() -> None:
    """List the built-in environments."""
    for name in builtin_env_names():
        try:
            manifest = load_manifest(resolve_env(name))
        except ManifestError as exc:
            out.print(Text.assemble((name, "bold"), "  ", ("invalid manifest:", "red"), f" {exc}"))
            continue
        presets = ", ".join(manifest.presets) or "-"
        summary = f"  {manifest.metric.name} ({manifest.metric.goal.value}); presets: {presets}"
        out.print(Text.assemble((name, "bold"), summary))
        out.print(f"    {manifest.description.strip().splitlines()[0]}")


@env_app.command("check")
def env_check(
    env: Annotated[str, typer.Argument(help="Built-in name or directory.")],
    preset: Annotated[str | None, typer.Option(help="Preset.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    slots: Annotated[int | None, typer.Option(help="CPU slots.")] = None,
    gpus: Annotated[str | None, typer.Option(help=GPUS_HELP)] = None,
    workdir: Annotated[Path | None, typer.Option(help="Keep the copy and logs here.")] = None,
    seed: Annotated[int, typer.Option(help="The job's IDEALAB_SEED (run with two to see the noise).")] = 0,
    sandbox: Annotated[
        str | None, typer.Option(help="The job under bubblewrap: auto (where usable), require, or off.")
    ] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory limit of each job process (MiB).")] = None,
) -> None:
    """Run the unmodified environment once through the executor and report its metric."""
    from idealab.executor.runner import with_sandbox_options

    try:
        manifest = load_manifest(resolve_env(env), preset)
        _check_sandbox_option(sandbox)
        manifest = with_sandbox_options(manifest, sandbox, memory_mb)
    except (ManifestError, ValueError) as exc:
        raise _fail(str(exc)) from None
    pool = _pool(slots, gpus, manifest.run.gpus)
    if not as_json:
        console.print(f"running {manifest.name} ({preset or 'default'}): {manifest.run.command}")
    if workdir is not None:
        outcome = _check_in(manifest, pool, workdir.resolve(), seed)
    else:  # a throw-away copy, removed however the check ends
        with tempfile.TemporaryDirectory(prefix="idealab-check-") as tmp:
            outcome = _check_in(manifest, pool, Path(tmp), seed)
    kept = workdir is not None
    result = {
        "env": manifest.name,
        "preset": preset,
        "status": outcome.status.value,
        "metric": outcome.metric,
        "metric_name": manifest.metric.name,
        "reason": outcome.reason,
        "duration_s": round(outcome.result.duration_s, 3),
        "training_s": outcome.result.training_s,  # the executor's measure, on the [budget]'s clock
        "stdout": str(outcome.result.stdout_path) if kept else None,  # removed with the copy (see --workdir)
        "stderr": str(outcome.result.stderr_path) if kept else None,
    }
    if as_json:
        write_json(result, sys.stdout)
    else:
        for key, value in result.items():
            out.print(f"{key}: {value}")
    if outcome.status.value != "ok":
        raise typer.Exit(1)


def _check_in(manifest: Manifest, pool: SlotPool, base: Path, seed: int = 0) -> Outcome:
    """Copy the environment to `base/code` and run it once with `seed`, logs in `base/logs`."""
    import asyncio

    from idealab.executor.local import LocalBackend
    from idealab.executor.runner import copy_omits, run_job
    from idealab.executor.sandbox import copy_environment

    workspace = copy_environment(manifest.root, base / "code", omit=copy_omits(manifest))

    async def go() -> Outcome:
        backend = LocalBackend(pool)
        try:
            return await run_job(backend, manifest, workspace, "check", base / "logs", seed=seed)
        finally:
            await backend.close()

    return asyncio.run(go())


@env_app.command("prepare")
def env_prepare(
    env: Annotated[str, typer.Argument(help="Built-in name or directory.")],
    preset: Annotated[str | None, typer.Option(help="Preset whose set-up to run.")] = None,
    shared_data: SharedData = None,
    download: Download = False,
) -> None:
    """Run an environment's set-up command (fetches or builds its data once)."""
    prepare_env(env, preset, shared_data, download)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
