"""What a command imports: the ideator registry builds by name, and LLM SDKs load only for the wire in use.

Each check runs in a fresh interpreter, so `sys.modules` shows what that code path alone imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

QUAD = Path(__file__).parent / "envs" / "quad"
SDKS = ("openai", "anthropic", "google.genai")
LLM_MODULES = (*SDKS, "idealab.ideators.llm", "idealab.llm")


def imported_after(code: str, *names: str) -> set[str]:
    """Which of `names` are in sys.modules after running `code` in a new interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([n for n in {list(names)!r} if n in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_cli_start_imports_no_llm_code() -> None:
    assert imported_after("import idealab.cli", *LLM_MODULES) == set()


READ_ONLY_SKIPS = ("sqlalchemy", "alembic", "idealab.store.store", "idealab.search.loop", "idealab.startup",
                   "idealab.tracking")  # fmt: skip


def test_status_and_report_import_neither_the_search_nor_sqlalchemy(tmp_path: Path) -> None:
    """Read-only commands read through `RunReader` (sqlite3): SQLAlchemy, its ORM and Alembic are most of a
    fresh interpreter's start-up, and these commands never write (docs/BENCHMARKS.md)."""
    from idealab.store import Store

    with Store.open(tmp_path) as store:  # migrated here: the read-only open of `status` only reads
        store.create_run("quad", str(QUAD), None, {}, {"metric": {"name": "loss", "goal": "minimize"}})
    for args in (
        ["status", "--json", "--workdir", str(tmp_path)],
        ["status", "--workdir", str(tmp_path)],
        ["report", "--workdir", str(tmp_path), "--out", str(tmp_path / "report.html")],
    ):
        command = f"from idealab.cli import app\napp({args!r}, standalone_mode=False)"
        assert imported_after(command, *READ_ONLY_SKIPS) == set(), args
    assert (tmp_path / "report.html").is_file()


def test_a_mutate_run_imports_no_llm_code(tmp_path: Path) -> None:
    run = (
        "from idealab.cli import app\n"
        f"args = ['run', '--env', {str(QUAD)!r}, '--epochs', '1', '--ideas-per-epoch', '1', '--slots', '1',\n"
        f"        '--workdir', {str(tmp_path / 'run')!r}, '--quiet']\n"
        "app(args, standalone_mode=False)"
    )
    assert imported_after(run, *LLM_MODULES) == set()
    assert (tmp_path / "run" / "idealab.db").is_file()  # the run really happened


def test_unknown_ideator_lists_valid_names_without_importing_any() -> None:
    code = (
        "from idealab.ideators import registry\n"
        "try:\n"
        "    registry.resolve('no-such')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    probe = f"{code}import sys\nprint('idealab.ideators.llm' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    message, llm_imported = done.stdout.strip().splitlines()
    assert message == "unknown ideator 'no-such'; valid: llm, mutate"
    assert llm_imported == "False"


def test_the_llm_ideator_module_loads_no_sdk_until_a_client_is_made() -> None:
    assert imported_after("import idealab.ideators.llm, idealab.llm", *SDKS) == set()


def test_a_client_loads_only_the_sdk_of_its_wire() -> None:
    make = "from idealab.llm import make_client\nmake_client('vllm:some-model', base_url='http://127.0.0.1:9/v1')"
    assert imported_after(make, *SDKS) == {"openai"}


def test_ray_is_imported_only_for_the_ray_backend() -> None:
    assert imported_after("import idealab.cli, idealab.executor.ray_worker", "ray") == set()
