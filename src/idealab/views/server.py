"""`idealab serve`: the report's views, live, for one or more runs (FastAPI on loopback, read-only).

The page polls its run's data; the server answers 304 until the database changes. Change is detected with
SQLite's `PRAGMA data_version` on a read-only connection, so an idle dashboard costs one pragma per poll
and never rebuilds or writes anything. In a large run the page data carries the diffs and log tails of the
featured experiments only (`html.featured`); the page fetches any other's from
`/api/runs/{i}/experiments/{id}`, and `/api/runs/{i}/experiments?offset=&limit=` pages through the listing.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from idealab.store import DB_NAME
from idealab.store.reader import RunReader
from idealab.views.data import RunSnapshot, connect_readonly, load_snapshot, open_readonly
from idealab.views.html import (
    experiment_details,
    experiment_row,
    page_title,
    plotly_js,
    render_page,
    report_data,
    script_json,
)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
PAGE_LIMIT = 1000  # most experiments one listing request returns


@dataclass(frozen=True)
class Snapshot:
    etag: str
    body: bytes  # the page data as JSON
    title: str
    run: RunSnapshot  # what the body was built from (the listing and detail requests read it)


class RunSource:
    """One run directory: its read-only store and the page data, rebuilt only after the database changed."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.store: RunReader = open_readonly(workdir)
        self._probe: sqlite3.Connection = connect_readonly(workdir / DB_NAME)
        self._lock = threading.Lock()
        self._version: int | None = None
        self._current: Snapshot | None = None

    def current(self) -> Snapshot:
        with self._lock:  # requests run in a thread pool; one rebuild at a time
            version = int(self._probe.execute("PRAGMA data_version").fetchone()[0])
            if self._current is None or version != self._version:
                snap = load_snapshot(self.store, self.workdir, diffs=False)  # the store stays open: diffs on demand
                body = script_json(report_data(snap)).encode()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                self._current, self._version = Snapshot(etag, body, page_title(snap), snap), version
            return self._current

    def label(self) -> str:
        run = self.store.get_run()
        return f"{self.workdir.name} ({run.env_name if run else 'no run yet'})"

    def close(self) -> None:
        self._probe.close()
        self.store.close()


def create_app(workdirs: list[Path], interval_ms: int = 2000) -> FastAPI:
    sources = [RunSource(w) for w in workdirs]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for s in sources:
                s.close()

    app = FastAPI(title="idealab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def source(index: int) -> RunSource:
        if not 0 <= index < len(sources):
            raise HTTPException(404, f"no run {index}: there are {len(sources)}")
        return sources[index]

    def snapshot(index: int) -> Snapshot:
        try:
            return source(index).current()
        except LookupError as exc:  # the directory has a database but no run row yet
            raise HTTPException(503, f"{source(index).workdir}: {exc}") from None

    @app.get("/", response_model=None)
    def index() -> RedirectResponse:
        return RedirectResponse("/runs/0")

    @app.get("/runs/{index}", response_class=HTMLResponse)
    def page(index: int) -> str:
        snap = snapshot(index)
        runs = [{"url": f"/runs/{i}", "label": s.label(), "current": i == index} for i, s in enumerate(sources)]
        live: dict[str, Any] = {
            "runs": runs, "data_url": f"/api/runs/{index}/data", "interval_ms": interval_ms, "etag": snap.etag,
            "detail_url": f"/api/runs/{index}/experiments/{{id}}",
        }  # fmt: skip
        # The page embeds the data it was built from, so the first paint needs no request.
        return render_page(json.loads(snap.body), snap.title, live=live, plotly_src="/static/plotly.min.js")

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return [{"index": i, "workdir": str(s.workdir), "label": s.label()} for i, s in enumerate(sources)]

    @app.get("/api/runs/{index}/data")
    def data(index: int, request: Request) -> Response:
        snap = snapshot(index)
        headers = {"ETag": snap.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == snap.etag:
            return Response(status_code=304, headers=headers)
        return Response(snap.body, media_type="application/json", headers=headers)

    @app.get("/api/runs/{index}/experiments")
    def experiments(
        index: int,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = 100,
    ) -> dict[str, Any]:
        """One page of the experiments (epoch >= 0, in (epoch, idx) order), without diffs or log tails."""
        run = snapshot(index).run
        page = run.experiments[offset : offset + limit]
        rows = [experiment_row(run, e) for e in page]
        return {"total": len(run.experiments), "offset": offset, "limit": limit, "experiments": rows}

    @app.get("/api/runs/{index}/experiments/{experiment_id}")
    def experiment(index: int, experiment_id: int) -> dict[str, Any]:
        """One experiment with its highlighted diff and log tail."""
        run = snapshot(index).run
        found = next((e for e in run.experiments if e.id == experiment_id), None)
        if found is None:
            raise HTTPException(404, f"run {index} has no experiment {experiment_id}")
        return {**experiment_row(run, found), **experiment_details(run, found), "details": True}

    @app.get("/static/plotly.min.js")
    def plotly() -> Response:
        return Response(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket: connections queue from here on, so whoever reads the URL may connect at once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app: FastAPI, sock: socket.socket) -> None:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
