"""Helpers of the views tests: a run environment with failures, writing an experiment, reading pages back."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

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
