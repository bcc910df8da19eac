"""Reusing the measured baseline of an earlier run: `idealab run --reuse-baseline FROM_WORKDIR`.

Measuring the unmodified environment costs `--baseline-runs` jobs per run. A later run of the same
experiment may take the repeats an earlier run measured instead, but only when it *is* the same
experiment: the same environment content (the hash of every file a job copies, manifest included:
`identity.py`), the same preset, and the same hardware for a job (GPU model and GPUs per job, or CPU model
and threads: `sysinfo.hardware_identity`), since under a fixed time budget the card decides the result.
A cluster run's hardware is declared, not measured: its backend, where its jobs go and the GPUs per job
(`BackendChoice.hardware_identity`); a local run's baseline is never reused by a cluster run, nor the reverse.
Anything else is refused with every difference named. The earlier run's database is only read (opened
read-only: never migrated or written), and the earlier run's baseline must have ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idealab.errors import RunFault
from idealab.identity import ENVIRONMENT_KEY
from idealab.search.evidence import ReusedBaseline
from idealab.search.journal import BASELINE_EPOCH
from idealab.status import Status
from idealab.store import DB_NAME, StoreError
from idealab.store.reader import RunReader

HARDWARE_KEY = "hardware"  # runs.config: `sysinfo.hardware_identity` of the run's jobs
REUSE_KEY = "baseline_reuse"  # runs.config: the reused repeats and where they came from
_LISTED = 8


class ReuseError(ValueError):
    """The earlier run's baseline cannot be reused; the message names every reason."""


def load_reusable_baseline(
    source: Path, preset: str | None, environment: Mapping[str, Any], hardware: Mapping[str, Any]
) -> ReusedBaseline:
    """The ok baseline repeats of the run in `source`, when its experiment is this one (else ReuseError)."""
    source = source.resolve()
    if not (source / DB_NAME).is_file():
        raise ReuseError(f"--reuse-baseline {source}: no idealab run there (no {DB_NAME})")
    try:
        with RunReader.open(source, leave_untouched=True) as store:
            run = store.get_run()
            rows = [] if run is None else store.ideas(run.id, epoch=BASELINE_EPOCH)
    except (StoreError, RunFault) as exc:
        raise ReuseError(f"--reuse-baseline {source}: cannot read its run: {exc}") from None
    if run is None:
        raise ReuseError(f"--reuse-baseline {source}: the work directory holds no run")
    problems = _differences(run.config, run.preset, preset, environment, hardware)
    ok = [r for r in rows if r.status is Status.OK and r.metric is not None]
    if not rows:
        problems.append("its baseline was never measured (no baseline runs: --baseline-runs 0 or not started)")
    elif not all(r.status.terminal for r in rows):
        problems.append("its baseline is not finished (some repeats have not ended; resume that run first)")
    elif not ok:
        problems.append("none of its baseline runs finished ok")
    if problems:
        raise ReuseError(
            f"cannot reuse the baseline of {source}:\n  - "
            + "\n  - ".join(problems)
            + "\n(measure the baseline in this run instead: leave out --reuse-baseline)"
        )
    seeds = tuple(s if isinstance(s := r.payload.get("seed"), int) else None for r in ok)
    return ReusedBaseline(str(source), tuple(float(r.metric) for r in ok if r.metric is not None), seeds,
                          tuple(r.id for r in ok))  # fmt: skip


def _differences(
    config: Mapping[str, Any],
    their_preset: str | None,
    preset: str | None,
    environment: Mapping[str, Any],
    hardware: Mapping[str, Any],
) -> list[str]:
    found = []
    theirs = config.get(ENVIRONMENT_KEY)
    if not isinstance(theirs, Mapping):
        found.append("it recorded no environment identity (an older idealab): its content cannot be compared")
    elif theirs.get("content_sha256") != environment["content_sha256"]:
        old, new = dict(theirs.get("files", {})), dict(environment["files"])
        for what, names in (
            ("differ", [rel for rel in sorted(old.keys() & new.keys()) if old[rel] != new[rel]]),
            ("are only in this run's environment", sorted(new.keys() - old.keys())),
            ("are only in its environment", sorted(old.keys() - new.keys())),
        ):
            if names:
                more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
                found.append(f"environment content: files {what}: {', '.join(names[:_LISTED])}{more}")
    if their_preset != preset:
        found.append(f"preset: {their_preset!r} there, {preset!r} here")
    recorded = config.get(HARDWARE_KEY)
    if not isinstance(recorded, Mapping):
        found.append("it recorded no hardware identity (an older idealab): its machine cannot be compared")
    elif (theirs_on := recorded.get("backend", "local")) != (ours_on := hardware.get("backend", "local")):
        found.append(
            f"backend: its jobs ran on the {theirs_on} backend, this run's go to the {ours_on} backend "
            "(a cluster's hardware is declared, this machine's measured: they cannot be compared)"
        )
    else:
        for key in sorted(set(recorded) | set(hardware)):
            if recorded.get(key) != hardware.get(key):
                found.append(f"hardware {key}: {recorded.get(key)!r} there, {hardware.get(key)!r} here")
    return found


def reuse_record(reused: ReusedBaseline) -> dict[str, Any]:
    """What a new run stores in its config (with its creation, in one transaction) about the reuse."""
    return {
        "workdir": reused.source,
        "metrics": list(reused.metrics),
        "seeds": list(reused.seeds),
        "source_ids": list(reused.source_ids),
    }


def reused_from_record(record: Mapping[str, Any] | None) -> ReusedBaseline | None:
    if not isinstance(record, Mapping):
        return None
    return ReusedBaseline(
        str(record["workdir"]), tuple(float(m) for m in record["metrics"]),
        tuple(record["seeds"]), tuple(int(i) for i in record["source_ids"]),
    )  # fmt: skip
