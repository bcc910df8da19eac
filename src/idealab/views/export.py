"""`idealab export`: one record per experiment, as JSON Lines or Parquet, for `datasets.load_dataset`.

FIELDS is the schema and its documentation at once (docs/report.md lists the same names; a test checks).
Ideas and diffs are written verbatim; non-finite numbers are written as null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from idealab.views.data import Experiment, RunSnapshot, Trial

FORMATS = ("jsonl", "parquet")

# name -> (Arrow type in a small notation, description)
FIELDS: dict[str, tuple[str, str]] = {
    "run_id": ("int64", "the run's id in its database"),
    "run_dir": ("string", "name of the run directory"),
    "run_started_at": ("float64", "when the run was created (Unix seconds, UTC)"),
    "env": ("string", "environment name"),
    "preset": ("string?", "environment preset, if any"),
    "env_description": ("string", "the environment's description from its manifest"),
    "metric_name": ("string", "the environment's metric"),
    "goal": ("string", "minimize or maximize"),
    "baseline": ("float64?", "metric of the unmodified environment"),
    "ideator": ("string", "ideator of the run (mutate, llm)"),
    "ideator_model": ("string?", "LLM that proposed ideas (provider:model), if any"),
    "implementer_model": ("string?", "LLM that wrote code changes, if any"),
    "seed": ("int64?", "seed of the search"),
    "run_config": ("string", "the run's stored options as JSON (epochs, ideas per epoch, host and versions, ...)"),
    "experiment_id": ("int64", "the experiment's (idea's) id"),
    "epoch": ("int64", "epoch; -1: a run of the baseline, -2: a confirmation run (payload.confirms)"),
    "idx": ("int64", "position within the epoch"),
    "kind": ("string", "baseline, initial, exploit, explore or confirm"),
    "proposed_by": ("string", "the ideator that proposed this idea"),
    "idea": ("string", "the idea text, verbatim"),
    "parents": ("list<int64>", "experiment ids this idea refines (exploit lineage)"),
    "payload": ("string", "the ideator's structured idea as JSON (knobs, strategy, plan, ...)"),
    "diff": ("string?", "the code that ran: unified diff of the job's copy against the environment"),
    "applied_diff": ("string?", "the implementer's accepted change as it was applied"),
    "status": (
        "string", "ok, failed, timeout, invalid, tampered, unimplementable, refused, cancelled (or an in-flight status)"
    ),
    "reason": ("string?", "why it did not finish ok (error tail, timeout, rule broken, ...)"),
    "metric": ("float64?", "the experiment's metric; null when it produced none that counts"),
    "beats_baseline": ("bool", "confirmed and better than the baseline by the test of docs/statistics.md"),
    "metric_values": ("list<struct>", "every value the jobs reported: job_key, name, value, step, source"),
    "trials": ("list<struct>", "jobs run for it: job_key, status, exit_code, timed_out, gpu_ids, started_at, "
                               "finished_at, duration_s, error"),
    "created_at": ("float64", "when the idea was stored (Unix seconds)"),
    "started_at": ("float64?", "when its last job started"),
    "finished_at": ("float64?", "when it reached its final status"),
    "duration_s": ("float64?", "finished_at - started_at"),
    "attempts": ("int64", "jobs started for it"),
    "job_hours": ("float64", "wall-clock hours of its jobs"),
    "gpu_hours": ("float64", "job hours times GPUs held"),
    "llm_calls": ("int64", "LLM calls made for this idea (implementation); ideation calls are per batch"),
    "llm_input_tokens": ("int64", "input tokens of those calls"),
    "llm_output_tokens": ("int64", "output tokens of those calls"),
    "llm_cost_usd": ("float64", "dollars of those calls (known prices only)"),
    "llm_models": ("list<string>", "models of those calls"),
}  # fmt: skip


def records(snap: RunSnapshot) -> list[dict[str, Any]]:
    # store order: confirmation runs (epoch -2), the baseline's repeats (-1), then the search by epoch
    everyone = sorted([*snap.repeats, *snap.experiments], key=lambda e: (e.epoch, e.idx))
    return [_record(snap, e) for e in everyone]


def _record(snap: RunSnapshot, e: Experiment) -> dict[str, Any]:
    run, cfg = snap.run, snap.run.config
    row: dict[str, Any] = {
        "run_id": run.id,
        "run_dir": snap.workdir.name,
        "run_started_at": run.created_at,
        "env": run.env_name,
        "preset": run.preset,
        "env_description": str(run.manifest.get("description", "")),
        "metric_name": snap.metric_name,
        "goal": snap.goal.value,
        "baseline": snap.baseline.value,
        "ideator": str(cfg.get("ideator")),
        "ideator_model": cfg.get("model"),
        "implementer_model": cfg.get("implementer_model") or cfg.get("model"),
        "seed": cfg.get("seed"),
        "run_config": json.dumps(cfg, sort_keys=True),
        "experiment_id": e.id,
        "epoch": e.epoch,
        "idx": e.idx,
        "kind": e.kind,
        "proposed_by": e.ideator,
        "idea": e.idea,
        "parents": list(e.parents),
        "payload": json.dumps(e.payload, sort_keys=True),
        "diff": e.diff,
        "applied_diff": e.applied_diff,
        "status": e.status.value,
        "reason": e.reason,
        "metric": e.metric,
        "beats_baseline": snap.beats_baseline(e),
        "metric_values": [
            {"job_key": t.job_key, "name": v.name, "value": v.value, "step": v.step, "source": v.source}
            for t in e.trials
            for v in t.values
        ],
        "trials": [_trial(t) for t in e.trials],
        "created_at": e.created_at,
        "started_at": e.started_at,
        "finished_at": e.finished_at,
        "duration_s": None if e.started_at is None or e.finished_at is None else e.finished_at - e.started_at,
        "attempts": e.attempts,
        "job_hours": e.job_hours,
        "gpu_hours": e.gpu_hours,
        "llm_calls": e.llm.calls,
        "llm_input_tokens": e.llm.input_tokens,
        "llm_output_tokens": e.llm.output_tokens,
        "llm_cost_usd": e.llm.cost_usd,
        "llm_models": list(e.llm.models),
    }
    return row


def _trial(t: Trial) -> dict[str, Any]:
    return {
        "job_key": t.job_key, "status": t.status, "exit_code": t.exit_code, "timed_out": t.timed_out,
        "gpu_ids": list(t.gpu_ids), "started_at": t.started_at, "finished_at": t.finished_at,
        "duration_s": t.duration_s, "error": t.error,
    }  # fmt: skip


# ---- writing -------------------------------------------------------------------------------------------


def write(rows: list[dict[str, Any]], fmt: str, out_dir: Path) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"experiments.{fmt}"
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        _write_parquet(rows, path)
    return path


def arrow_schema() -> Any:
    import pyarrow as pa  # only the Parquet export needs Arrow (it comes with `datasets`)

    metric_value = pa.struct(
        [("job_key", pa.string()), ("name", pa.string()), ("value", pa.float64()), ("step", pa.int64()),
         ("source", pa.string())]
    )  # fmt: skip
    trial = pa.struct(
        [("job_key", pa.string()), ("status", pa.string()), ("exit_code", pa.int64()), ("timed_out", pa.bool_()),
         ("gpu_ids", pa.list_(pa.int64())), ("started_at", pa.float64()), ("finished_at", pa.float64()),
         ("duration_s", pa.float64()), ("error", pa.string())]
    )  # fmt: skip
    simple = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_(),
              "list<int64>": pa.list_(pa.int64()), "list<string>": pa.list_(pa.string())}  # fmt: skip
    nested = {"metric_values": pa.list_(metric_value), "trials": pa.list_(trial)}
    return pa.schema(
        [pa.field(name, nested.get(name) or simple[kind.rstrip("?")]) for name, (kind, _) in FIELDS.items()]
    )


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise RuntimeError("the Parquet export needs pyarrow: pip install 'idealab[data]'") from exc
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), path)
