"""The report file and the live page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Set-up installs chromium (tests/browser/setup.sh, run by `make test`); without it these tests are skipped.
IDEALAB_SCREENSHOTS=DIR keeps the screenshots there (`make screenshots` writes the ones in docs/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runhelpers import add_finished_experiment, embedded_json, idealab

CHROMIUM = os.environ.get("IDEALAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium: run tests/browser/setup.sh (apt-get install chromium)"),
]
POINTS = "document.querySelectorAll('#plot-experiments .scatterlayer .point').length"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    yield page, problems
    page.close()


def shot_path(tmp_path: Path, name: str) -> Path:
    where = os.environ.get("IDEALAB_SCREENSHOTS")
    return Path(where) / name if where else tmp_path / name


def test_report_file_renders_every_experiment(page: tuple[Any, list[str]], quad_run: Path, tmp_path: Path) -> None:
    tab, problems = page
    report = tmp_path / "report.html"
    done = idealab("report", "--workdir", str(quad_run), "--out", str(report))
    assert done.returncode == 0, done.stderr
    experiments = embedded_json(report.read_text())["experiments"]

    tab.goto(report.as_uri())
    tab.wait_for_function(f"{POINTS} > 0")
    assert tab.evaluate(POINTS) == len(experiments)
    assert tab.locator("#experiments tbody tr.row").count() == len(experiments)

    failed = [e for e in experiments if e["status"] != "ok"]
    chosen = (failed or experiments)[0]
    tab.click(f"#exp-{chosen['id']}")
    detail = tab.locator("#experiments tr.detail")
    assert chosen["idea"] in detail.inner_text()
    if chosen["diff_html"]:
        assert detail.locator("pre.diff span").count() > 0  # highlighted
    tab.screenshot(path=str(shot_path(tmp_path, "report.png")), full_page=True)
    assert problems == []


def test_live_page_shows_an_experiment_as_it_finishes(
    page: tuple[Any, list[str]], served: Any, run_copy: Path, tmp_path: Path
) -> None:
    tab, problems = page
    url = served(run_copy)
    tab.goto(url + "runs/0")
    tab.wait_for_function(f"{POINTS} > 0")
    before = tab.evaluate(POINTS)
    assert before == tab.evaluate("window.idealab.state.data.experiments.length")

    added = add_finished_experiment(run_copy, "Added while the page was open.", 0.5)
    finished = f"window.idealab.state.data.experiments.some((e) => e.id === {added} && e.status === 'ok')"
    tab.wait_for_function(finished, timeout=30_000)  # a later poll of the page brings it
    assert tab.evaluate(POINTS) == before + 1
    assert tab.locator("#experiments tbody tr.row").count() == before + 1
    tab.screenshot(path=str(shot_path(tmp_path, "dashboard.png")))
    assert problems == []


def test_report_of_a_large_run_says_where_the_details_it_omits_are(
    page: tuple[Any, list[str]], quad_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from idealab.views import html
    from idealab.views.data import read_snapshot

    monkeypatch.setattr(html, "EMBED_ALL_UP_TO", 4)  # this run stands for one of thousands
    monkeypatch.setattr(html, "FEATURED_TOP", 2)
    report = tmp_path / "report.html"
    report.write_text(html.render_report(read_snapshot(quad_run)), encoding="utf-8")
    experiments = embedded_json(report.read_text())["experiments"]
    omitted = next(e for e in experiments if not e["details"])
    shown = next(e for e in experiments if e["details"] and e["diff_html"])

    tab, problems = page
    tab.goto(report.as_uri())
    tab.wait_for_function(f"{POINTS} > 0")
    tab.click(f"#exp-{omitted['id']}")
    note = tab.locator("#experiments tr.detail .details-omitted")
    assert "idealab serve" in note.inner_text() and f"experiments/{omitted['id']:05d}/logs/" in note.inner_text()
    tab.click(f"#exp-{omitted['id']}")  # closed again
    tab.click(f"#exp-{shown['id']}")
    assert tab.locator("#experiments tr.detail pre.diff span").count() > 0
    assert problems == []


def test_live_page_fetches_the_details_it_was_not_sent(
    page: tuple[Any, list[str]], served: Any, quad_run: Path
) -> None:
    tab, problems = page
    url = served(quad_run)
    tab.goto(url + "runs/0")
    tab.wait_for_function(f"{POINTS} > 0")
    # as the server sends the experiments of a large run that are not featured: no diff, no log tail
    chosen = tab.evaluate(
        """() => { const e = window.idealab.state.data.experiments.find((x) => x.diff_html);
                   e.details = false; e.diff_html = null; e.log_tail = ""; return e.id; }"""
    )
    tab.click(f"#exp-{chosen}")
    tab.wait_for_function("document.querySelectorAll('#experiments tr.detail pre.diff span').length > 0")
    assert problems == []
