"""Starting or resuming a run, in an order that leaves nothing behind when a start fails: everything that
can fail (options, environment, GPUs, ideator, implementer, keys, LLM settings, prices) is built and checked
first; only then is a new run stored in WORKDIR/idealab.db. A resume that would change the run's LLM
settings is refused, naming each difference, unless it is explicitly allowed (then the change is recorded).
The backend and its options are stored with the run too (`executor.backends.resolve_backend` decides a
resume's, from `stored_backend`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idealab.baseline_reuse import REUSE_KEY, ReuseError, load_reusable_baseline, reused_from_record
from idealab.errors import RunFault
from idealab.executor.backends import BACKEND_KEY, BackendChoice
from idealab.executor.gpus import choose_gpu_ids
from idealab.executor.slots import SlotPool
from idealab.ideators import registry
from idealab.identity import differences, environment_identity
from idealab.manifest import Manifest, ManifestError, load_manifest, resolve_env
from idealab.runconfig import (
    RunOptions,
    RunSettings,
    describe_changes,
    manifest_to_dict,
    record_settings_change,
    resolve_run_options,
    settings_changes,
    stored_llm_settings,
)
from idealab.search.evidence import ReusedBaseline
from idealab.store import DB_NAME, RunRecord, Store, StoreError
from idealab.sysinfo import hardware_identity

if TYPE_CHECKING:  # the LLM package loads its SDKs: not for a run without an LLM
    from idealab.auditor import Auditor
    from idealab.llm.types import CallRecord


class StartError(ValueError):
    """A run cannot start (or resume); the message says why and what to do."""


@dataclass(frozen=True)
class Started:
    store: Store  # the caller closes it
    run: RunRecord
    options: RunSettings
    manifest: Manifest
    pool: SlotPool
    built: registry.Built
    settings_changed: str | None  # the accepted changes of LLM settings, in words; None when none
    auditor: Auditor | None = None  # --audit-model: reviews suspect results
    reused_baseline: ReusedBaseline | None = None  # baseline repeats taken from an earlier run


class CallLog:
    """Records LLM calls as rows of the run's `llm_calls` once the run is stored (no call is made before)."""

    def __init__(self) -> None:
        self._record: Callable[[CallRecord], None] | None = None

    def bind(self, store: Store, run_id: int) -> None:
        def record(call: CallRecord) -> None:
            extra: dict[str, object] = {"attempts": call.attempts}
            if call.cache_write_tokens:
                extra["cache_write_tokens"] = call.cache_write_tokens
            if call.cancelled:
                extra["cancelled"] = True
            elif call.unanswered_attempts:  # attempts that timed out, billed at an estimate
                extra["unanswered_attempts"] = call.unanswered_attempts
            if call.estimated:  # input_tokens and cost_usd are an estimate, not the provider's usage
                extra["estimated"] = True
            extra.update(call.extra)  # what the caller noted about the answer (ideation: ideas read)
            store.add_llm_call(
                run_id, call.role, call.provider, call.model, call.prompt, call.response or "",
                call.input_tokens, call.output_tokens, call.cost_usd, call.latency_s,
                error=call.error, idea_id=call.idea_id, extra=extra,
                cached_tokens=call.cached_input_tokens, thinking_tokens=call.thinking_tokens,
            )  # fmt: skip

        self._record = record

    def __call__(self, call: CallRecord) -> None:
        if self._record is None:
            raise RuntimeError("an LLM call was made before its run was stored")
        self._record(call)


def slot_pool(slots: int | None, gpus: str | None, gpus_per_job: int, local: bool = True) -> SlotPool:
    """The run's slots. `local`: jobs run on this machine, on its GPUs; else on a cluster, whose scheduler
    assigns the GPUs: the pool is then only how many jobs run at once (`slots`, default 1)."""
    if not local:
        return SlotPool.cpu_only(slots if slots is not None else 1)
    try:
        gpu_ids = choose_gpu_ids(gpus)
    except ValueError as exc:  # LLMConfigError is one
        raise StartError(f"--audit-model: {exc}" if "--audit-model" not in str(exc) else str(exc)) from None
    if gpus_per_job > len(gpu_ids):
        found = ",".join(map(str, gpu_ids)) or "none"
        raise StartError(
            f"the environment needs {gpus_per_job} GPU(s) per job; GPUs available: {found} (use --gpus)"
        )
    return SlotPool(gpu_ids, cpu_slots=slots if slots is not None else max(1, len(gpu_ids) or 1))


def llm_option_pairs(items: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise StartError(f"--llm-option expects NAME=VALUE, got {item!r}")
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def start(
    workdir: Path,
    given: RunOptions,
    *,
    slots: int | None,
    gpus: str | None,
    keys_file: Path | None,
    llm_options: list[str],
    allow_changed_settings: bool,
    environment_defaults: Mapping[str, Any] | None = None,
    backend: BackendChoice | None = None,
) -> Started:
    """The checked parts of a run, its store open. Raises StartError (nothing created) when it cannot.
    `backend`: where the jobs run (default local: on this machine; else on a cluster: see `slot_pool`),
    resolved against the stored one by the caller (`stored_backend`); stored with a new run."""
    opened: list[Store] = []  # closed again when the start fails
    try:
        return _start(
            opened, workdir, given, slots, gpus, keys_file, llm_options, allow_changed_settings, environment_defaults,
            backend or BackendChoice(),
        )  # fmt: skip
    except BaseException:
        for store in opened:
            store.close()
        raise


def _start(
    opened: list[Store],
    workdir: Path,
    given: RunOptions,
    slots: int | None,
    gpus: str | None,
    keys_file: Path | None,
    llm_options: list[str],
    allow_changed_settings: bool,
    environment_defaults: Mapping[str, Any] | None,
    backend: BackendChoice,
) -> Started:
    store = _open(opened, workdir) if (workdir / DB_NAME).exists() else None
    stored_run = store.get_run() if store is not None else None
    if stored_run is None and not given.env:
        raise StartError(f"{workdir} holds no run: give --env to start one")
    try:
        options = resolve_run_options(stored_run, given, environment_defaults)
        manifest, environment = _environment(stored_run, given.env, options, workdir)
    except (ManifestError, ValueError) as exc:
        raise StartError(str(exc)) from None
    pool = slot_pool(slots, gpus, manifest.run.gpus, backend.local)
    hardware = (
        hardware_identity(pool.gpu_ids, manifest.run.gpus)
        if backend.local
        else backend.hardware_identity(manifest.run.gpus, manifest.run.slurm_options)
    )
    if stored_run is None:
        options, reused = _reuse(given, options, manifest, environment, hardware)
    else:
        reused = _check_resumed_reuse(stored_run, given)
    calls = CallLog()
    stored_llm = stored_llm_settings(stored_run) if stored_run is not None else None
    try:
        built = registry.build(
            options.ideator,
            registry.IdeatorOptions(
                model=options.model, implementer_model=options.implementer_model, base_url=options.base_url,
                keys_file=keys_file, max_cost_usd=options.max_cost_usd, batch_size=options.batch_size,
                extra=llm_option_pairs(llm_options), recorder=calls,
                spent_usd=store.total_cost(stored_run.id) if store is not None and stored_run is not None else 0.0,
                stored_settings=stored_llm,
            ),
        )  # fmt: skip
    except ValueError as exc:  # LLMConfigError is one
        raise StartError(f"--audit-model: {exc}" if "--audit-model" not in str(exc) else str(exc)) from None
    auditor = _auditor(options, keys_file, calls)
    changed = None
    if stored_run is not None and store is not None:
        changes = settings_changes(stored_llm or {}, built.settings)
        if changes:
            words = describe_changes(changes, built.settings.get("given", {}))
            if not allow_changed_settings:
                raise StartError(
                    "resuming would change the LLM settings this run was started with:\n"
                    f"{words}\ngive the same settings again, or pass --allow-changed-settings to apply the new "
                    "ones (the change is recorded with the run)"
                )
            record_settings_change(store, stored_run, built.settings, changes)
            changed = words
        elif "llm" not in stored_run.config:  # a run from before settings were stored: store them now
            store.set_run_config(stored_run.id, {**stored_run.config, "llm": dict(built.settings)})
        run = store.get_run()
        assert run is not None
        if BACKEND_KEY not in run.config:  # a run from before the backend was stored: store it now
            store.set_run_config(run.id, {**run.config, BACKEND_KEY: backend.record()})
            run = store.get_run()
        assert run is not None
    else:
        # Everything is checked: only now does the work directory get its database and the run.
        store = store or _open(opened, workdir)
        run = options.create_run(store, manifest, built.settings, environment, hardware, reused, backend.record())
    calls.bind(store, run.id)
    return Started(store, run, options, manifest, pool, built, changed, auditor, reused)


def _auditor(options: RunSettings, keys_file: Path | None, calls: CallLog) -> Auditor | None:
    """The auditor model, checked (key, name, price under a cost cap) before the run is stored."""
    if not options.audit_model:
        return None
    from idealab.auditor import build_auditor  # imports the LLM package: only for a run with an auditor
    from idealab.llm import parse_model_spec

    try:
        provider = parse_model_spec(options.audit_model, allow_unnamed=True)[0]
        main = parse_model_spec(options.model, allow_unnamed=True)[0] if options.model else None
        # --base-url names the main model's server (or, without --model, the auditor's own)
        base_url = options.base_url if main in (None, provider) else None
        return build_auditor(
            options.audit_model, base_url=base_url, keys_file=keys_file, recorder=calls,
            max_cost_usd=options.max_cost_usd,
        )  # fmt: skip
    except ValueError as exc:  # LLMConfigError is one
        raise StartError(f"--audit-model: {exc}" if "--audit-model" not in str(exc) else str(exc)) from None


def _reuse(
    given: RunOptions, options: RunSettings, manifest: Manifest, environment: Mapping[str, Any],
    hardware: Mapping[str, Any],
) -> tuple[RunSettings, ReusedBaseline | None]:
    """A new run's --reuse-baseline: the earlier run's repeats, checked to be of this experiment. Without
    --baseline-runs the run takes all of them; with it, K repeats in all (any beyond the reused ones are
    measured)."""
    if given.reuse_baseline is None:
        return options, None
    if options.baseline_runs == 0 or options.baseline_value is not None:
        raise StartError("--reuse-baseline reuses measured repeats: it excludes --baseline-runs 0 and --baseline-value")
    try:
        reused = load_reusable_baseline(Path(given.reuse_baseline), manifest.preset, environment, hardware)
    except ReuseError as exc:
        raise StartError(str(exc)) from None
    runs = given.baseline_runs if given.baseline_runs is not None else len(reused.metrics)
    return replace(options, baseline_runs=runs, reuse_baseline=reused.source), reused


def _check_resumed_reuse(run: RunRecord, given: RunOptions) -> ReusedBaseline | None:
    """A resume keeps the run's own baseline: --reuse-baseline may only repeat the one it started with."""
    reused = reused_from_record(run.config.get(REUSE_KEY))
    if given.reuse_baseline is not None:
        asked = str(Path(given.reuse_baseline).resolve())
        if reused is None or reused.source != asked:
            had = "measures its own baseline" if reused is None else f"reused the baseline of {reused.source}"
            raise StartError(
                f"--reuse-baseline {asked}: this work directory's run already exists and {had}; "
                "--reuse-baseline applies to a new run (leave it out to resume, or use another --workdir)"
            )
    return reused


def _environment(
    run: RunRecord | None, given_env: str | None, options: RunSettings, workdir: Path
) -> tuple[Manifest, dict[str, Any]]:
    """The run's manifest and environment identity. A resume without --env takes the run's own resolved
    directory (a relative --env stored as given would resolve from wherever the resume is started); a resume
    whose environment or manifest differs from the run's is refused, each difference named."""
    env_dir = Path(run.env_root) if run is not None and given_env is None else resolve_env(options.env)
    manifest = load_manifest(env_dir, options.preset)
    environment = environment_identity(manifest.root, exclude=workdir)
    problems = [] if run is None else differences(run, environment, manifest_to_dict(manifest))
    if problems:
        raise StartError(
            "this work directory's run cannot continue with a changed environment:\n  - "
            + "\n  - ".join(problems)
            + "\n(restore the environment as it was, or use another --workdir for a new run)"
        )
    return manifest, environment


def stored_backend(workdir: Path) -> dict[str, Any] | None:
    """The backend stored with the run in `workdir` (`BackendChoice.record`), read without writing; None for
    a new run or one from before the backend was stored (a database that cannot be read: the start reports
    that)."""
    if not (workdir / DB_NAME).exists():
        return None
    try:
        with Store.open_readonly(workdir) as store:
            run = store.get_run()
    except (StoreError, RunFault):
        return None
    record = None if run is None else run.config.get(BACKEND_KEY)
    return dict(record) if isinstance(record, Mapping) else None


def _open(opened: list[Store], workdir: Path) -> Store:
    store = Store.open(workdir)
    opened.append(store)
    return store
