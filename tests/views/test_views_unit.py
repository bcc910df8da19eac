"""Views over runs written through the Store directly: per-epoch cost and compute, and the documented export."""

from __future__ import annotations

from pathlib import Path

import pytest

from idealab.status import Status
from idealab.store import Store
from idealab.views.data import load_snapshot, open_readonly
from idealab.views.export import FIELDS
from idealab.views.summary import epoch_rows

DOCS = Path(__file__).resolve().parents[2] / "docs" / "report.md"


def test_llm_cost_and_gpu_hours_per_epoch(tmp_path: Path) -> None:
    """LLM calls and GPU jobs written through the Store land in the right epoch of the summary."""
    with Store.open(tmp_path) as store:
        run = store.create_run("toy", "/envs/toy", None, {"epochs": 2}, {"metric": {"name": "acc", "goal": "maximize"}})
        store.add_llm_call(run.id, "ideator", "openai", "m", "p", "r", 10, 5, 0.25, 1.0)  # proposes epoch 0
        a = store.add_idea(run.id, 0, 0, "initial", "a", "llm", {})
        b = store.add_idea(run.id, 0, 1, "initial", "b", "llm", {})
        store.add_llm_call(run.id, "implementer", "openai", "m", "p", "r", 10, 5, 0.5, 1.0, idea_id=a.id)
        store.add_llm_call(run.id, "ideator", "openai", "m", "p", "r", 10, 5, 1.0, 1.0)  # proposes epoch 1
        c = store.add_idea(run.id, 1, 0, "exploit", "c", "llm", {"parents": [a.id]})
        for idea, gpus, metric in ((a, (0, 1), 0.5), (b, (2,), 0.7), (c, (0,), 0.9)):
            store.add_job(idea.id, f"j{idea.id}", "cmd", "/w", "/o", "/e")
            store.job_started(f"j{idea.id}", 1000.0, gpus, None)
            store.job_finished(f"j{idea.id}", 1000.0 + 1800, 0, False, "ok")
            store.finish_idea(idea.id, Status.OK, metric, None, 2800.0)
    store = open_readonly(tmp_path)
    try:
        rows = epoch_rows(load_snapshot(store, tmp_path))
    finally:
        store.close()
    assert [r.llm_cost_usd for r in rows] == [0.75, 1.0]
    assert [r.cum_llm_cost_usd for r in rows] == [0.75, 1.75]
    assert [r.gpu_hours for r in rows] == [1.5, 0.5] and [r.cum_gpu_hours for r in rows] == [1.5, 2.0]
    assert [(r.best, r.best_id) for r in rows] == [(0.7, b.id), (0.9, c.id)]  # maximize
    assert rows[0].mean == pytest.approx(0.6)


def test_every_exported_field_is_documented() -> None:
    text = DOCS.read_text()
    missing = [name for name in FIELDS if f"`{name}`" not in text]
    assert missing == []


def test_report_of_a_run_without_experiments_renders(tmp_path: Path) -> None:
    from runhelpers import embedded_json

    from idealab.views.data import read_snapshot
    from idealab.views.html import render_report

    with Store.open(tmp_path) as store:
        store.create_run("toy", "/envs/toy", None, {}, {"metric": {"name": "acc", "goal": "maximize"}})
    data = embedded_json(render_report(read_snapshot(tmp_path)))
    assert data["experiments"] == [] and data["epochs"] == [] and data["best_id"] is None


def test_text_that_closes_a_script_tag_stays_data(tmp_path: Path) -> None:
    from runhelpers import embedded_json

    from idealab.views.data import read_snapshot
    from idealab.views.html import render_report

    text = 'Try </script><script>alert("x")</script> & <b>bold</b>'
    with Store.open(tmp_path) as store:
        run = store.create_run("toy", "/envs/toy", None, {}, {"metric": {"name": "acc", "goal": "maximize"}})
        idea = store.add_idea(run.id, 0, 0, "initial", text, "llm", {})
        store.update_idea(idea.id, final_diff=f"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+{text}\n")
    html = render_report(read_snapshot(tmp_path))
    data = embedded_json(html)
    assert data["experiments"][0]["idea"] == text
    assert "&lt;/script&gt;" in data["experiments"][0]["diff_html"]  # Pygments escaped the diff
    assert html.count("<script") == 3  # plotly, data, app: the idea opened none

