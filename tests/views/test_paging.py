"""Large runs: `status` pages its listing, the report embeds the details of its featured experiments only,
and the dashboard pages its listing and serves any experiment's details on demand."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from runhelpers import add_finished_experiment, embedded_json, idealab

from idealab.report import latest, status_json
from idealab.store import Store
from idealab.views import html
from idealab.views.data import opened_snapshot, read_snapshot


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_latest_takes_the_last_items_before_the_offset_in_order() -> None:
    items = list(range(10))
    assert latest(items, 0, 0) == items
    assert latest(items, 3, 0) == [7, 8, 9]
    assert latest(items, 3, 2) == [5, 6, 7]
    assert latest(items, 0, 4) == [0, 1, 2, 3, 4, 5]
    assert latest(items, 5, 8) == [0, 1]
    assert latest(items, 5, 10) == [] and latest(items, 0, 12) == []


@pytest.mark.slow  # the shared real run
def test_status_json_pages_cover_every_experiment_once(quad_run: Path) -> None:
    with Store.open_readonly(quad_run) as store:
        whole = status_json(store)
        total = whole["experiments_total"]
        assert total == len(whole["experiments"]) > 4
        pages = [status_json(store, limit=4, offset=offset) for offset in range(0, total, 4)]
    assert all(p["experiments_total"] == total for p in pages)
    assert all(p["best"] == whole["best"] and p["counts"] == whole["counts"] for p in pages)  # the whole run
    ids = [e["id"] for page in reversed(pages) for e in page["experiments"]]
    assert ids == [e["id"] for e in whole["experiments"]]


@pytest.mark.slow  # the shared real run
def test_status_cli_limit_and_offset(quad_run: Path) -> None:
    done = idealab("status", "--workdir", str(quad_run), "--json", "--limit", "2", "--offset", "1")
    assert done.returncode == 0, done.stderr
    paged = json.loads(done.stdout)
    whole = json.loads(idealab("status", "--workdir", str(quad_run), "--json").stdout)
    assert [e["id"] for e in paged["experiments"]] == [e["id"] for e in whole["experiments"][-3:-1]]
    table = idealab("status", "--workdir", str(quad_run), "--limit", "3")
    assert table.returncode == 0, table.stderr
    total = whole["experiments_total"]
    assert f"3 of {total} experiments listed" in table.stdout
    assert f"{total - 3} experiment(s) not listed" in table.stdout


@pytest.mark.slow  # the shared real run
def test_a_large_report_embeds_the_details_of_its_featured_experiments(
    quad_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(html, "EMBED_ALL_UP_TO", 4)  # this run stands for one of thousands
    monkeypatch.setattr(html, "FEATURED_TOP", 2)
    snap = read_snapshot(quad_run)
    page = html.render_report(snap)
    data = embedded_json(page)
    embedded = {e["id"] for e in data["experiments"] if e["details"]}
    best = snap.journal.best()
    assert best is not None and best.id in embedded
    assert {e.id for e in snap.experiments[-2:]} <= embedded  # the latest
    assert data["details_embedded"] == len(embedded) < len(data["experiments"])
    for e in data["experiments"]:
        if not e["details"]:
            assert e["diff_html"] is None and e["log_tail"] == ""
    shown = next(e for e in data["experiments"] if e["id"] == best.id)
    assert shown["diff_html"] and "@metric" in shown["log_tail"]
    assert "<script src=" not in page  # still self-contained


@pytest.mark.slow  # the shared real run
def test_dashboard_pages_its_listing_and_serves_details(served, run_copy: Path) -> None:
    url = served(run_copy)
    status, body = get(url + "api/runs/0/data")
    whole = json.loads(body)["experiments"]
    pages = []
    for offset in range(0, len(whole), 5):
        status, body = get(url + f"api/runs/0/experiments?offset={offset}&limit=5")
        assert status == 200
        page = json.loads(body)
        assert page["total"] == len(whole) and page["offset"] == offset
        pages += page["experiments"]
    assert [e["id"] for e in pages] == [e["id"] for e in whole]
    assert all(e["diff_html"] is None and not e["details"] for e in pages)  # listings are light
    assert get(url + "api/runs/0/experiments?limit=100000")[0] == 422
    assert get(url + "api/runs/0/experiments?offset=-1")[0] == 422

    failed = next(e for e in whole if e["status"] == "failed")
    status, body = get(url + f"api/runs/0/experiments/{failed['id']}")
    assert status == 200
    detail = json.loads(body)
    assert detail["details"] and detail["id"] == failed["id"]
    assert detail["log_tail"] == failed["log_tail"] and detail["diff_html"] == failed["diff_html"]
    assert get(url + "api/runs/0/experiments/999999")[0] == 404

    added = add_finished_experiment(run_copy, "Added while serving.", 0.25)  # pages follow the run
    status, body = get(url + f"api/runs/0/experiments?offset={len(whole)}&limit=5")
    assert [e["id"] for e in json.loads(body)["experiments"]] == [added]


@pytest.mark.slow  # the shared real run
def test_status_json_lists_the_latest_json_limit_by_default(
    quad_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from idealab import cli

    monkeypatch.setattr(cli, "JSON_LIMIT", 3)  # this run stands for one of thousands
    cli.app(["status", "--workdir", str(quad_run), "--json"], standalone_mode=False)
    printed = capsys.readouterr()
    data = json.loads(printed.out)  # stdout stays one JSON document
    total = data["experiments_total"]
    assert len(data["experiments"]) == 3 < total
    assert f"3 of {total} experiments listed" in printed.err
    cli.app(["status", "--workdir", str(quad_run), "--json", "--limit", "0"], standalone_mode=False)
    printed = capsys.readouterr()
    assert len(json.loads(printed.out)["experiments"]) == total and printed.err == ""


@pytest.mark.slow  # the shared real run
def test_the_store_reads_ideas_without_their_diffs_and_the_diffs_of_a_few(quad_run: Path) -> None:
    with Store.open_readonly(quad_run) as store:
        run = store.get_run()
        assert run is not None
        whole, light = store.ideas(run.id), store.ideas(run.id, diffs=False)
        assert [(i.applied_diff, i.final_diff) for i in light] == [(None, None)] * len(whole)
        assert [{**vars(i), "applied_diff": None, "final_diff": None} for i in whole] == [vars(i) for i in light]
        changed = {i.id for i in whole if i.applied_diff is not None}
        assert 0 < len(changed) < len(whole) and store.changed_ideas(run.id) == changed
        some = [i.id for i in whole[::2]]
        assert store.idea_diffs([*some, 999_999]) == {
            i.id: (i.applied_diff, i.final_diff) for i in whole if i.id in set(some)
        }


@pytest.mark.slow  # the shared real run
def test_a_report_with_diffs_read_on_demand_is_the_same_report(quad_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html, "EMBED_ALL_UP_TO", 4)  # so that only the featured experiments' diffs are read
    monkeypatch.setattr(html, "FEATURED_TOP", 2)
    full = read_snapshot(quad_run)
    with opened_snapshot(quad_run) as lazy:
        assert all(e.diff is None and e.applied_diff is None for e in lazy.experiments)
        assert html.report_data(lazy) == html.report_data(full)
        assert [lazy.diff_of(e) for e in lazy.experiments] == [e.diff for e in full.experiments]
        assert [e.implemented for e in lazy.experiments] == [e.implemented for e in full.experiments]
        assert any(e.diff for e in full.experiments)


@pytest.mark.slow  # the shared real run
def test_the_dashboard_reads_the_diff_of_an_experiment_it_does_not_embed(
    quad_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import uvicorn

    from idealab.views import server

    monkeypatch.setattr(html, "EMBED_ALL_UP_TO", 4)
    monkeypatch.setattr(html, "FEATURED_TOP", 1)
    sock = server.bind("127.0.0.1", 0)
    running = uvicorn.Server(uvicorn.Config(server.create_app([quad_run]), log_level="warning"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        url = server.url_of(sock)
        status, body = 0, b""
        for _ in range(300):  # until uvicorn serves (the socket listens already: the request waits)
            status, body = get(url + "api/runs/0/data")
            if status == 200:
                break
        whole = json.loads(body)["experiments"]
        plain = next(e for e in whole if not e["details"] and e["status"] == "ok")
        detail = json.loads(get(url + f"api/runs/0/experiments/{plain['id']}")[1])
        stored = next(e for e in read_snapshot(quad_run).experiments if e.id == plain["id"])
        assert stored.diff and detail["diff_html"] == html.highlight_diff(stored.diff)
    finally:
        running.should_exit = True
        thread.join(timeout=30)
