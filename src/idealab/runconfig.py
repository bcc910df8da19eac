"""The options of a run: given on the command line, stored with the run, honoured on resume."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from idealab.baseline_reuse import HARDWARE_KEY, REUSE_KEY, reuse_record
from idealab.executor.backends import BACKEND_KEY
from idealab.identity import ENVIRONMENT_KEY
from idealab.manifest import Manifest
from idealab.search.evidence import ReusedBaseline
from idealab.search.loop import SearchConfig
from idealab.search.schedule import ExploitSchedule
from idealab.store import RunRecord, Store
from idealab.sysinfo import system_info

_SCHEDULE = ExploitSchedule()
_SEARCH = SearchConfig()
# Used where neither the command line nor (for ideas_per_epoch) the environment's manifest gives a value.
DEFAULTS: dict[str, Any] = {
    "ideator": "mutate",
    "epochs": 10,
    "ideas_per_epoch": 80,
    "seed": 0,
    "next_epoch_at": 0.5,
    "batch_size": 10,
    "exploit_start": _SCHEDULE.start,
    "exploit_step": _SCHEDULE.step,
    "exploit_every": _SCHEDULE.every,
    "exploit_cap": _SCHEDULE.cap,
    "exploit_round_to": _SCHEDULE.round_to,
    "history_sample": _SEARCH.history_sample,
    "implement_concurrency": _SEARCH.implement_concurrency,
    "baseline_runs": 3,
    "confirm_top": 3,
    "confirm_seeds": 3,
}
# What defines a run: resuming with a different value would mix two searches in one database. The models
# are LLM settings: a resume may change them only when told to (see `settings_changes`). The environment is
# not compared as the text given (`env` and `../x/env` can be one directory, and one text two): the resolved
# directory and its files are, by `identity.differences`.
FIXED = ("preset", "ideator", "ideas_per_epoch", "seed")


@dataclass(frozen=True)
class RunOptions:
    env: str | None = None
    preset: str | None = None
    ideator: str | None = None
    model: str | None = None
    implementer_model: str | None = None
    base_url: str | None = None
    max_cost_usd: float | None = None
    epochs: int | None = None
    ideas_per_epoch: int | None = None
    seed: int | None = None
    next_epoch_at: float | None = None
    batch_size: int | None = None
    exploit_start: float | None = None
    exploit_step: float | None = None
    exploit_every: int | None = None
    exploit_cap: float | None = None
    exploit_round_to: int | None = None
    history_sample: int | None = None
    implement_concurrency: int | None = None
    baseline_runs: int | None = None
    baseline_value: float | None = None
    confirm_top: int | None = None
    confirm_seeds: int | None = None
    audit_model: str | None = None
    reuse_baseline: str | None = None  # an earlier run's work directory whose measured baseline is reused

    @classmethod
    def from_cli(cls, **given: Any) -> RunOptions:
        return cls(**given)


@dataclass(frozen=True)
class RunSettings:
    """The resolved options of a run (what is stored with it)."""

    env: str
    preset: str | None
    ideator: str
    model: str | None
    implementer_model: str | None
    base_url: str | None
    max_cost_usd: float | None
    epochs: int
    ideas_per_epoch: int
    seed: int
    next_epoch_at: float
    batch_size: int
    exploit_start: float
    exploit_step: float
    exploit_every: int
    exploit_cap: float
    exploit_round_to: int
    history_sample: int
    implement_concurrency: int
    baseline_runs: int
    baseline_value: float | None
    confirm_top: int
    confirm_seeds: int
    audit_model: str | None = None  # reviews suspect results for reward hacking (docs/llm.md)
    reuse_baseline: str | None = None

    def search_config(self, reused: ReusedBaseline | None = None) -> SearchConfig:
        if self.history_sample < 1 or self.implement_concurrency < 1:
            raise ValueError("history_sample and implement_concurrency must be >= 1")
        schedule = ExploitSchedule(
            start=self.exploit_start, step=self.exploit_step, every=self.exploit_every, cap=self.exploit_cap,
            round_to=self.exploit_round_to,
        )
        return SearchConfig(
            epochs=self.epochs,
            ideas_per_epoch=self.ideas_per_epoch,
            seed=self.seed,
            schedule=schedule,
            next_epoch_at=self.next_epoch_at,
            batch_size=self.batch_size,
            history_sample=self.history_sample,
            implement_concurrency=self.implement_concurrency,
            baseline_runs=self.baseline_runs,
            baseline_value=self.baseline_value,
            confirm_top=self.confirm_top,
            confirm_seeds=self.confirm_seeds,
            reused_baseline=reused,
        )

    def create_run(
        self,
        store: Store,
        manifest: Manifest,
        llm: Mapping[str, Any],
        environment: Mapping[str, Any] | None = None,
        hardware: Mapping[str, Any] | None = None,
        reused: ReusedBaseline | None = None,
        backend: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Store a new run: its options, its LLM settings (`llm`, never a key), the host and versions (for
        reports), its environment's identity (`identity.py`), its jobs' hardware, the baseline repeats it
        reuses from an earlier run (stored with the run, in one transaction), its backend and options
        (`BackendChoice.record`, never a credential) and its manifest."""
        config = {**asdict(self), "llm": dict(llm), "system": system_info()}
        if backend is not None:
            config[BACKEND_KEY] = dict(backend)
        if environment is not None:
            config[ENVIRONMENT_KEY] = dict(environment)
        if hardware is not None:
            config[HARDWARE_KEY] = dict(hardware)
        if reused is not None:
            config[REUSE_KEY] = reuse_record(reused)
        return store.create_run(manifest.name, str(manifest.root), self.preset, config, manifest_to_dict(manifest))


def env_defaults(manifest: Manifest) -> dict[str, Any]:
    """The run options an environment's manifest suggests (its `[search]` table)."""
    return {"ideas_per_epoch": manifest.search.ideas_per_epoch} if manifest.search.ideas_per_epoch else {}


def resolve_run_options(
    run: RunRecord | None, given: RunOptions, environment_defaults: Mapping[str, Any] | None = None
) -> RunSettings:
    """New run: the given options over the environment's defaults over the built-in ones. Resumed run: the
    stored options, which the fixed ones may not contradict; the others (epochs, cost cap, ...) may be
    changed for this invocation, the LLM settings only as `settings_changes` allows."""
    values = {f.name: getattr(given, f.name) for f in fields(RunOptions)}
    if run is None:
        if not values["env"]:
            raise ValueError("--env is required to start a new run (the work directory holds none)")
        for key, default in {**DEFAULTS, **(environment_defaults or {})}.items():
            if values[key] is None:
                values[key] = default
        settings = RunSettings(**values)
        settings.search_config()  # validates ranges before anything is stored
        return settings
    stored = dict(run.config)
    for key in FIXED:
        if values[key] is not None and stored.get(key) is not None and values[key] != stored[key]:
            raise ValueError(
                f"this work directory's run was started with {key}={stored[key]!r}; it cannot continue with "
                f"{key}={values[key]!r} (use another --workdir for a new run)"
            )
    merged: dict[str, Any] = {key: values[key] if values[key] is not None else stored.get(key) for key in values}
    for key, default in DEFAULTS.items():
        if merged[key] is None:
            merged[key] = default
    return RunSettings(**merged)


def stored_llm_settings(run: RunRecord) -> dict[str, Any]:
    """The LLM settings a run was stored with (runs from before they were stored: their models only)."""
    llm = run.config.get("llm")
    if isinstance(llm, dict):
        return llm
    model = run.config.get("model")
    return {} if model is None else {"model": model, "implementer_model": run.config.get("implementer_model") or model}


def settings_changes(stored: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What resuming with `now` would change in the stored LLM settings: name -> (stored, now). Only names
    both know are compared (`given`, where this invocation's values came from, is no setting)."""
    flat_stored, flat_now = _flatten(stored), _flatten(now)
    return {
        name: (flat_stored[name], value)
        for name, value in flat_now.items()
        if name in flat_stored and flat_stored[name] != value and not name.startswith("given")
    }


def describe_changes(changes: Mapping[str, tuple[Any, Any]], given: Mapping[str, str]) -> str:
    """One line per change, naming where the new value came from when this invocation gave it."""
    lines = []
    for name, (old, new) in changes.items():
        source = given.get(name.removeprefix("settings."))
        lines.append(f"  {name}: {old!r} when the run started, {new!r} now" + (f" (from {source})" if source else ""))
    return "\n".join(lines)


def record_settings_change(store: Store, run: RunRecord, llm: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """Apply changed LLM settings to a resumed run, keeping what changed and when in `llm_changes`."""
    config = dict(run.config)
    history = list(config.get("llm_changes") or [])
    history.append({"at": time.time(), "changes": {k: list(v) for k, v in changes.items()}})
    config.update(
        llm=dict(llm), llm_changes=history, model=llm.get("model"), implementer_model=llm.get("implementer_model")
    )
    store.set_run_config(run.id, config)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """A JSON-able snapshot of the resolved manifest (stored with each run)."""
    m = manifest.metric
    return {
        "name": manifest.name,
        "description": manifest.description,
        "root": str(manifest.root),
        "preset": manifest.preset,
        "rules": list(manifest.rules),
        "run": {
            "command": manifest.run.command,
            "timeout_s": manifest.run.timeout_s,
            "gpus": manifest.run.gpus,
            "env": dict(manifest.run.env),
            "setup": manifest.run.setup,
            "preflight": manifest.run.preflight,
            "preflight_timeout_s": manifest.run.preflight_timeout_s,
            "seed_env": manifest.run.seed_env,
            "seed_flag": manifest.run.seed_flag,
            "allow_processes": manifest.run.allow_processes,
        },
        "metric": {
            "name": m.name,
            "goal": m.goal.value,
            "reduce": m.reduce.value,
            "regex": None if m.regex is None else m.regex.pattern,
            "baseline": m.baseline,
            "valid_range": None if m.valid_range is None else list(m.valid_range),
            "partial_on_timeout": m.partial_on_timeout,
            "bound": m.bound,
        },
        "guidance": None if manifest.guidance is None else {
            "direction": manifest.guidance.direction, "examples": list(manifest.guidance.examples),
        },
        "search": {"ideas_per_epoch": manifest.search.ideas_per_epoch},
        "score": None if manifest.score is None else {
            "command": manifest.score.command, "timeout_s": manifest.score.timeout_s,
            "private_data": list(manifest.score.private_data),
        },
        "budget": None if manifest.budget is None else {
            "seconds": manifest.budget.seconds, "clock": manifest.budget.clock.value,
            "grace_s": manifest.budget.grace_s,
        },
        "files": {
            "editable": list(manifest.files.editable),
            "readonly": list(manifest.files.readonly),
            "hidden": list(manifest.files.hidden),
        },
        "knobs": {
            k.name: {"file": k.file, "low": k.low, "high": k.high, "log": k.log, "integer": k.integer}
            for k in manifest.knobs.values()
        },
    }
