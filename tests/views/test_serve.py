"""`idealab serve`: a real uvicorn server on loopback, read-only, following a run that changes under it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from runhelpers import add_finished_experiment, embedded_json, idealab

pytestmark = pytest.mark.slow  # a real run and real servers


def get(url: str, etag: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:  # 304 and 404 arrive as errors
        return err.code, dict(err.headers), err.read()


def test_serves_on_loopback_by_default(served, quad_run: Path) -> None:
    url = served(quad_run)
    assert url.startswith("http://127.0.0.1:")


def test_data_follows_an_experiment_that_finishes_while_serving(served, run_copy: Path) -> None:
    url = served(run_copy)
    status, headers, body = get(url + "api/runs/0/data")
    assert status == 200
    before = json.loads(body)
    assert get(url + "api/runs/0/data", headers["etag"])[0] == 304  # nothing changed: nothing rebuilt

    new_id = add_finished_experiment(run_copy, "Added while the dashboard runs.", 0.125)

    status, _, body = get(url + "api/runs/0/data", headers["etag"])
    assert status == 200
    after = json.loads(body)
    assert len(after["experiments"]) == len(before["experiments"]) + 1
    added = next(e for e in after["experiments"] if e["id"] == new_id)
    assert (added["status"], added["metric"], added["idea"]) == ("ok", 0.125, "Added while the dashboard runs.")
    # whether a jump this size is suspect depends on the run's history (which varies with timing): a suspect
    # result is never the best until cleared, an unflagged one is the epoch's new best
    if "suspect" in added["flags"]:
        assert after["epochs"][-1]["best"] != 0.125 and after["epochs"][-1]["best_so_far"] != 0.125
    else:
        assert after["epochs"][-1]["best"] == 0.125 and after["epochs"][-1]["best_so_far"] == 0.125


def test_page_embeds_the_data_and_loads_plotly_from_the_server(served, quad_run: Path) -> None:
    url = served(quad_run)
    status, _, body = get(url + "runs/0")
    assert status == 200
    html = body.decode()
    data = embedded_json(html)
    live = embedded_json(html, "idealab-live")
    assert len(data["experiments"]) > 0 and live["data_url"] == "/api/runs/0/data"
    assert '<script src="/static/plotly.min.js">' in html
    status, headers, script = get(url + "static/plotly.min.js")
    assert status == 200 and script.startswith(b"/**\n* plotly.js v")


def test_several_runs_are_selectable(served, quad_run: Path, run_copy: Path) -> None:
    url = served(quad_run, run_copy)
    status, _, body = get(url + "api/runs")
    assert status == 200
    assert [r["workdir"] for r in json.loads(body)] == [str(quad_run.resolve()), str(run_copy.resolve())]
    live = embedded_json(get(url + "runs/1")[2].decode(), "idealab-live")
    assert [r["current"] for r in live["runs"]] == [False, True]
    assert get(url + "runs/2")[0] == 404


def test_serve_refuses_a_directory_without_a_run(tmp_path: Path) -> None:
    done = idealab("serve", "--workdir", str(tmp_path), "--port", "0")
    assert done.returncode == 2 and "no idealab run" in done.stderr
