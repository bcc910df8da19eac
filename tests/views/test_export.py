"""`idealab export`: one record per experiment that `datasets` loads back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runhelpers import idealab

from idealab.store import Store
from idealab.views.data import read_snapshot
from idealab.views.export import FIELDS, records

pytestmark = pytest.mark.slow  # every test here reads the shared real run (one `idealab run`, ~15 s)


@pytest.fixture(scope="module")
def expected(quad_run: Path) -> list[dict]:
    return records(read_snapshot(quad_run, with_values=True))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_export_round_trips_through_datasets(quad_run: Path, expected: list[dict], tmp_path: Path, fmt: str) -> None:
    datasets = pytest.importorskip("datasets")
    done = idealab("export", "--workdir", str(quad_run), "--format", fmt, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    builder = "json" if fmt == "jsonl" else "parquet"
    loaded = datasets.load_dataset(
        builder, data_files=str(tmp_path / "out" / f"experiments.{fmt}"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert loaded.column_names == list(FIELDS)
    assert [dict(row) for row in loaded] == expected


def test_export_holds_every_experiment_verbatim(quad_run: Path, expected: list[dict]) -> None:
    with Store.open(quad_run) as store:
        run = store.get_run()
        assert run is not None
        ideas = store.ideas(run.id)
        jobs = store.jobs()
    assert [r["experiment_id"] for r in expected] == [i.id for i in ideas]  # the baseline first, then by epoch
    for row, idea in zip(expected, ideas, strict=True):
        assert (row["idea"], row["diff"], row["applied_diff"], row["status"], row["reason"], row["metric"]) == (
            idea.text, idea.final_diff, idea.applied_diff, idea.status.value, idea.reason, idea.metric
        )  # fmt: skip
        assert row["parents"] == idea.payload.get("parents", []) and json.loads(row["payload"]) == idea.payload
        assert [t["job_key"] for t in row["trials"]] == [j.job_key for j in jobs if j.idea_id == idea.id]
        if row["status"] == "ok":
            assert row["metric_values"][-1]["value"] == row["metric"]
        assert row["env"] == "quad" and row["seed"] == 3 and row["ideator"] == "mutate"


def test_unknown_format_is_refused(quad_run: Path, tmp_path: Path) -> None:
    done = idealab("export", "--workdir", str(quad_run), "--format", "csv", "--out", str(tmp_path))
    assert done.returncode == 2 and "jsonl, parquet" in done.stderr
