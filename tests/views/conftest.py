"""A real small run shared by the report, export, serve and browser tests, and helpers to read it back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from idealab.metrics import MetricValue
from idealab.status import Status
from idealab.store import Store

QUAD = Path(__file__).resolve().parent.parent / "envs" / "quad"
EPOCHS, IDEAS = 3, 6


def idealab(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idealab", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def mixed_env(root: Path) -> Path:
    """quad, changed so that some knob values fail: X < -1 crashes, Y > 7 outruns a 5 s limit, a loss
    above 6 is outside the valid range. A run of it has ok, failed, timeout and invalid experiments."""
    env = root / "quadmix"
    shutil.copytree(QUAD, env)
    train = env / "train.py"
    train.write_text(
        train.read_text().replace(
            "time.sleep(",
            'if X < -1.0:\n    raise RuntimeError("loss diverged: X below -1")\n'
            "if Y > 7.0:\n    time.sleep(60)\ntime.sleep(",
            1,
        )
    )
    manifest = env / "idealab.toml"
    text = manifest.read_text().replace("timeout_s = 30", "timeout_s = 5")
    manifest.write_text(text.replace("valid_range = [0.0, 100.0]", "valid_range = [0.0, 6.0]"))
    return env


@pytest.fixture(scope="session")
def quad_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `idealab run` (mutate ideator) of the mixed quad environment."""
    root = tmp_path_factory.mktemp("views")
    workdir = root / "run"
    done = idealab(
        "run", "--env", str(mixed_env(root)), "--epochs", str(EPOCHS), "--ideas-per-epoch", str(IDEAS),
        "--slots", "2", "--seed", "3", "--workdir", str(workdir), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return workdir


@pytest.fixture
def run_copy(quad_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared run that a test may add experiments to."""
    copy = tmp_path / "run"
    shutil.copytree(quad_run, copy)
    return copy


def add_finished_experiment(workdir: Path, text: str, metric: float) -> int:
    """Do what the orchestrator does for one experiment, through the Store: propose, run, finish ok."""
    with Store.open(workdir) as store:
        run = store.get_run()
        assert run is not None
        epoch = max(i.epoch for i in store.ideas(run.id))
        idx = 1 + max(i.idx for i in store.ideas(run.id, epoch=epoch))
        idea = store.add_idea(run.id, epoch, idx, "explore", text, "test", {"parents": []})
        key = f"i{idea.id}-a1"
        logs = workdir / "experiments" / f"{idea.id:05d}" / "logs" / key
        store.add_job(idea.id, key, "python train.py", workdir, logs / "stdout.log", logs / "stderr.log")
        store.job_started(key, time.time(), (), None)
        store.update_idea(idea.id, status=Status.RUNNING, started_at=time.time())
        store.finish_idea(
            idea.id, Status.OK, metric, None, time.time(), job_key=key, values=[MetricValue("loss", metric)]
        )
        return idea.id


class _ScriptFinder(HTMLParser):
    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.element_id, self.inside, self.text = element_id, False, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = tag == "script" and ("id", self.element_id) in attrs

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [(tag, value) for name, value in attrs if name in ("src", "href")]


def resource_links(html: str) -> list[tuple[str, str | None]]:
    """(tag, URL) of every src and href attribute in the page's markup (script bodies are not markup)."""
    parser = _Links()
    parser.feed(html)
    return parser.links


def embedded_json(html: str, element_id: str = "idealab-data") -> Any:
    import json

    finder = _ScriptFinder(element_id)
    finder.feed(html)
    assert finder.text, f"no <script id={element_id}> in the page"
    return json.loads(finder.text)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start `idealab serve` on a free loopback port for the given run directories; yields its base URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(*workdirs: Path, extra: tuple[str, ...] = ()) -> str:
        args = [a for w in workdirs for a in ("--workdir", str(w))]
        proc = subprocess.Popen(
            [sys.executable, "-m", "idealab", "serve", *args, "--port", "0", "--interval", "0.3", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed once the socket listens
        assert url.startswith("http://"), proc.stderr.read() if proc.stderr else url
        return url

    yield start
    for proc in procs:
        proc.terminate()
        proc.communicate(timeout=30)
