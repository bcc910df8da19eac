"""`idealab report`: one self-contained HTML file whose embedded data is the run, checked against the store."""

from __future__ import annotations

import hashlib
from pathlib import Path
from statistics import fmean

import pytest
from runhelpers import embedded_json, idealab, resource_links

from idealab.status import Status
from idealab.store import Store

pytestmark = pytest.mark.slow  # every test here reads the shared real run (one `idealab run`, ~15 s)


@pytest.fixture(scope="module")
def report(quad_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = idealab("report", "--workdir", str(quad_run), "--out", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    return html, embedded_json(html)


def _ideas(workdir: Path):
    with Store.open(workdir) as store:
        run = store.get_run()
        assert run is not None
        return run, store.ideas(run.id), store.jobs()


def test_the_run_has_several_statuses(quad_run: Path) -> None:
    _, ideas, _ = _ideas(quad_run)
    statuses = {i.status for i in ideas if i.epoch >= 0}
    assert Status.OK in statuses and len(statuses) >= 2, statuses  # the mixed env makes some fail


def test_report_contains_every_experiment_as_stored(quad_run: Path, report: tuple[str, dict]) -> None:
    _, data = report
    _, ideas, _ = _ideas(quad_run)
    stored = {i.id: i for i in ideas if i.epoch >= 0}
    shown = {e["id"]: e for e in data["experiments"]}
    assert set(shown) == set(stored)
    for idea_id, idea in stored.items():
        e = shown[idea_id]
        assert (e["epoch"], e["kind"], e["status"], e["idea"], e["reason"]) == (
            idea.epoch, idea.kind, idea.status.value, idea.text, idea.reason
        )  # fmt: skip
        assert e["metric"] == idea.metric
        assert e["parents"] == list(idea.payload.get("parents", []))
        assert (e["diff_html"] is None) == (idea.final_diff is None)


def test_per_epoch_numbers_match_the_store(quad_run: Path, report: tuple[str, dict]) -> None:
    _, data = report
    run, ideas, jobs = _ideas(quad_run)
    started = {j.idea_id for j in jobs if j.started_at is not None}
    rows = {r["epoch"]: r for r in data["epochs"]}
    assert sorted(rows) == list(range(run.config["epochs"]))
    best_so_far = None
    for epoch, row in rows.items():
        group = [i for i in ideas if i.epoch == epoch]
        ok = [i.metric for i in group if i.status is Status.OK and i.metric is not None]
        assert row["proposed"] == len(group)
        assert row["implemented"] == sum(1 for i in group if i.applied_diff is not None)
        assert row["ran"] == sum(1 for i in group if i.id in started)
        assert row["ok"] == len(ok)
        assert row["statuses"] == {s: sum(1 for i in group if i.status.value == s) for s in row["statuses"]}
        assert sum(row["statuses"].values()) == len(group)
        assert row["best"] == (min(ok) if ok else None)  # quad minimizes its loss
        assert row["mean"] == pytest.approx(fmean(ok) if ok else None)
        best_so_far = min([x for x in (best_so_far, row["best"]) if x is not None], default=None)
        assert row["best_so_far"] == best_so_far
    assert data["baseline"]["value"] == run.baseline_metric
    assert data["metric"] == {"name": "loss", "goal": "minimize"}


def test_cost_and_compute_per_epoch_add_up(quad_run: Path, report: tuple[str, dict]) -> None:
    _, data = report
    _, ideas, jobs = _ideas(quad_run)
    epoch_of = {i.id: i.epoch for i in ideas}
    for row in data["epochs"]:
        hours = sum(
            (j.finished_at - j.started_at) / 3600
            for j in jobs
            if epoch_of[j.idea_id] == row["epoch"] and j.started_at is not None and j.finished_at is not None
        )
        assert row["job_hours"] == pytest.approx(hours)
        assert row["gpu_hours"] == 0 and row["llm_cost_usd"] == 0  # CPU slots, mutate ideator
    assert data["epochs"][-1]["cum_job_hours"] == pytest.approx(sum(r["job_hours"] for r in data["epochs"]))


def test_report_is_self_contained_and_small(report: tuple[str, dict]) -> None:
    html, _ = report
    links = [value for _tag, value in resource_links(html) if value and not value.startswith(("#", "data:"))]
    assert links == [], "the report must load nothing"
    assert "plotly.js v" in html  # the library itself is inline
    assert len(html.encode()) < 8_000_000


def test_report_shows_run_metadata(report: tuple[str, dict]) -> None:
    _, data = report
    meta = dict(data["meta"])
    assert meta["ideator"] == "mutate" and meta["seed"] == "3"
    assert meta["environment"] == "quad"
    assert "run host: python" in meta and "run host: idealab" in meta  # recorded when the run started


def test_failed_experiments_carry_reason_and_log_tail(report: tuple[str, dict]) -> None:
    _, data = report
    for e in data["experiments"]:
        if e["status"] == "failed":
            assert "loss diverged" in e["reason"] and "loss diverged" in e["log_tail"]
        if e["status"] == "ok":
            assert "@metric" in e["log_tail"]
            assert "+X = " in e["diff_html"] or "+Y = " in e["diff_html"]


def test_report_does_not_write_the_database(run_copy: Path, tmp_path: Path) -> None:
    db = run_copy / "idealab.db"
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns)
    done = idealab("report", "--workdir", str(run_copy), "--out", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before


def test_report_of_a_directory_without_a_run_fails_clearly(tmp_path: Path) -> None:
    done = idealab("report", "--workdir", str(tmp_path))
    assert done.returncode == 2 and "no idealab run" in done.stderr
    assert not (tmp_path / "idealab.db").exists()
