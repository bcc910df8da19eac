"""The options of a run: given on the command line, stored with the run, honoured on resume."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from idealab.manifest import Manifest
from idealab.search.loop import SearchConfig
from idealab.store import RunRecord, Store
from idealab.sysinfo import system_info

DEFAULTS: dict[str, Any] = {
    "ideator": "mutate",
    "epochs": 10,
    "ideas_per_epoch": 80,
    "seed": 0,
    "next_epoch_at": 0.5,
    "batch_size": 10,
}
# What defines a run: resuming with a different value would mix two searches in one database. The models
# are LLM settings: a resume may change them only when told to (see `settings_changes`).
FIXED = ("env", "preset", "ideator", "ideas_per_epoch", "seed")


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

    def search_config(self) -> SearchConfig:
        return SearchConfig(
            epochs=self.epochs,
            ideas_per_epoch=self.ideas_per_epoch,
            seed=self.seed,
            next_epoch_at=self.next_epoch_at,
            batch_size=self.batch_size,
        )

    def create_run(self, store: Store, manifest: Manifest, llm: Mapping[str, Any]) -> RunRecord:
        """Store a new run: its options, its LLM settings (`llm`, never a key), the host and versions (for
        reports) and its manifest."""
        config = {**asdict(self), "llm": dict(llm), "system": system_info()}
        return store.create_run(manifest.name, str(manifest.root), self.preset, config, manifest_to_dict(manifest))


def resolve_run_options(run: RunRecord | None, given: RunOptions) -> RunSettings:
    """New run (`run` None): the given options over the defaults. Resumed run: the stored options, which
    the fixed ones may not contradict; the others (epochs, cost cap, ...) may be changed for this
    invocation, the LLM settings only as `settings_changes` allows."""
    values = {f.name: getattr(given, f.name) for f in fields(RunOptions)}
    if run is None:
        if not values["env"]:
            raise ValueError("--env is required to start a new run (the work directory holds none)")
        for key, default in DEFAULTS.items():
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
        },
        "metric": {
            "name": m.name,
            "goal": m.goal.value,
            "reduce": m.reduce.value,
            "regex": None if m.regex is None else m.regex.pattern,
            "baseline": m.baseline,
            "valid_range": None if m.valid_range is None else list(m.valid_range),
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
