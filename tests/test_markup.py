"""Text from models and jobs prints as itself: `idealab run` and `status` never read it as Rich markup."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from fakeprovider import FakeProvider, Reply
from idealab.manifest import Goal, MetricSpec
from idealab.search.live import LiveDisplay
from idealab.search.loop import SearchEvent
from idealab.status import Status

QUAD = Path(__file__).parent / "envs" / "quad"

IDEA = """[Experiment] Move X to 0.3 [/2] and keep [bold]Y[/bold] as it is :rocket:.
[Code Changes] In train.py set X = 0.3.
[End]
"""

SET_X = """--- a/train.py
+++ b/train.py
@@ -6,3 +6,3 @@
\x20
-X = 0.5
+X = 0.3
 Y = 2.0
"""

# A job that fails with markup-like text on stderr whenever X is not the baseline's value
FAILING_TAIL = """
import sys
if X != 0.5:
    sys.stderr.write("[/] unbalanced [red]markup from the job[/]\\n")
    sys.exit(3)
"""


def markup_env(tmp_path: Path) -> Path:
    env = tmp_path / "env"
    shutil.copytree(QUAD, env)
    train = env / "train.py"
    text = train.read_text()
    train.write_text(text.replace("time.sleep(", FAILING_TAIL + "\ntime.sleep(", 1))
    return env


def idealab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idealab", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.slow  # importing the provider SDKs in the subprocess takes ~20 s on the 2-core VM
def test_markup_in_an_idea_and_in_a_jobs_stderr_prints_literally(tmp_path: Path, fake_provider: FakeProvider):
    fake_provider.add("chat", Reply.answer(IDEA), Reply.answer(SET_X))
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "IDEALAB_"))}
    variables.update({"IDEALAB_LLM_SAMPLES": "1", "IDEALAB_LLM_RETRY_BASE_DELAY_S": "0.01"})
    workdir = tmp_path / "run"
    done = idealab(
        "run", "--env", str(markup_env(tmp_path)), "--ideator", "llm", "--model", "openai:some-model",
        "--base-url", fake_provider.openai_base_url, "--workdir", str(workdir), "--epochs", "1",
        "--ideas-per-epoch", "1", "--quiet", env=variables,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "[/2] and keep [bold]Y[/bold] as it is :rocket:" in printed

    table = idealab("status", "--workdir", str(workdir), env={**os.environ, "COLUMNS": "400"})  # no wrapping
    assert table.returncode == 0, table.stderr
    assert "[/] unbalanced [red]markup from the job[/]" in table.stdout
    assert "[/2] and keep [bold]Y[/bold] as it is :rocket:" in table.stdout
    assert "failed" in table.stdout


def test_the_live_display_prints_markup_from_ideas_and_metric_names_literally() -> None:
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=200, markup=False)
    display = LiveDisplay(console, MetricSpec("loss[/]", Goal.MINIMIZE), total=2)
    with display:
        display.on_event(SearchEvent("started", 0, 1, Status.RUNNING, text="[/2] idea"))
        display.on_event(SearchEvent("finished", 0, 1, Status.OK, 1.5, text="[/2] idea [bold]x[/bold]"))
        display.on_event(SearchEvent("stopping", -1, text="budget [/] spent"))
    printed = sink.getvalue()
    assert "[/2] idea [bold]x[/bold]" in printed and "loss[/]=1.5" in printed and "budget [/] spent" in printed
