"""Every shell command in README.md and docs/ is one a user can paste.

Commands come from fenced `bash` blocks (every fence must name its language, so none hides in an untagged
block). Each `idealab` command is parsed against the real CLI, so an unknown option, a bad value or an extra
argument fails; `make` targets must exist; `python script.py --opt` must name a script whose `--help` lists
the option; variables set must be ones the project reads. The commands that need no GPU, key or network are
also run as written, in a temporary directory (the slow ones are marked slow).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from idealab.cli import app
from idealab.data import DataError, shakespeare_path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs").glob("*/*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
QUAD = ROOT / "tests" / "envs" / "quad"
# Programs the docs show that are not this project's (servers a user starts); only their presence is allowed.
EXTERNAL = {"vllm", "ollama", "llama-server", "pip", "ray"}  # other projects' programs: not checked here
EXTERNAL_MODULES = {"llama_cpp.server"}  # `python -m` of another project
SEPARATORS = {"&&", "||", ";", "|", "&"}

# Doc commands run as written; each needs no GPU, key or network. Every other command is parsed only.
RUN_FAST = {"idealab env list", "idealab status --workdir runs/charlm"}
RUN_SLOW = {"idealab env check charlm --preset cpu-smoke --json"}


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    cwd: Path  # after any `cd` earlier in its block, relative to the repository root
    assignments: tuple[tuple[str, str], ...]  # VAR=value before the program
    argv: tuple[str, ...]

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


def fences(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line of the opening fence, its language, the lines inside) for each fenced block of a Markdown file."""
    blocks: list[tuple[int, str, list[str]]] = []
    opened: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("```"):
            if opened is not None:
                body.append(line)
            continue
        if opened is None:
            opened, body = (number, line[3:].strip()), []
        else:
            blocks.append((*opened, body))
            opened = None
    assert opened is None, f"{path.name}:{opened[0]}: fence never closed"
    return blocks


def shell_commands(path: Path) -> list[DocCommand]:
    commands: list[DocCommand] = []
    for start, language, body in fences(path):
        if language not in SHELL_LANGUAGES:
            continue
        cwd = Path(".")
        joined = "\n".join(body).replace("\\\n", " ")  # continuation lines
        for offset, line in enumerate(joined.splitlines(), 1):
            words = shlex.split(line, comments=True)
            where = f"{path.relative_to(ROOT)}:{start + offset}"
            for part in split_on(words, SEPARATORS):
                assignments = []
                while part and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", part[0]):
                    name, _, value = part.pop(0).partition("=")
                    assignments.append((name, value))
                if part and part[0] == "cd":
                    cwd = cwd / part[1]
                if part or assignments:
                    commands.append(DocCommand(where, cwd, tuple(assignments), tuple(part)))
    return commands


def split_on(words: list[str], separators: set[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in words:
        if word in separators:
            parts.append([])
        else:
            parts[-1].append(word)
    return [p for p in parts if p]


ALL = [cmd for doc in DOCS for cmd in shell_commands(doc)]


class BadUsage(Exception):
    """What the CLI would reject with a usage error (exit status 2)."""


def parse_cli(args: list[str]) -> None:
    """Parse `idealab ARGS` as the CLI would, without running the command; raises BadUsage.

    Typer carries its own copy of click, whose classes it does not export: commands are told apart by
    what they can do (a group resolves subcommands), usage errors by their exit status.
    """
    command: Any = typer.main.get_command(app)
    name, ctx = "idealab", None
    try:
        while hasattr(command, "resolve_command") and args and not args[0].startswith("-"):
            ctx = command.make_context(name, [args[0]], parent=ctx)
            name, command, args = command.resolve_command(ctx, args)
        command.make_context(name, list(args), parent=ctx)
    except Exception as exc:
        code = getattr(exc, "exit_code", None)
        if code == 0:  # --help: printed, nothing wrong
            return
        if code == 2:
            raise BadUsage(exc.format_message()) from None  # type: ignore[attr-defined]
        raise


def project_reads(variable: str) -> bool:
    """Whether the variable's name appears in the project's sources (the package, its environments)."""
    pattern = re.compile(rf"\b{re.escape(variable)}\b")
    return any(pattern.search(p.read_text(encoding="utf-8")) for p in (ROOT / "src").rglob("*.py"))


def script_setting(cmd: DocCommand, variable: str) -> bool:
    """Whether `PREFIX_NAME` sets NAME, a module-level setting of the script the command runs (the way
    environments such as grpo take GRPO_<SETTING> overrides)."""
    scripts = [ROOT / cmd.cwd / a for a in cmd.argv[1:2] if a.endswith(".py")]
    _, _, name = variable.partition("_")
    return any(re.search(rf"^{re.escape(name)} *=", s.read_text(), flags=re.M) for s in scripts if s.is_file())


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


# ------------------------------------------------------------------------------------------- the docs


def test_the_docs_hold_commands() -> None:
    assert len(ALL) > 20 and any(c.argv[:1] == ("idealab",) for c in ALL)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fence_names_its_language(doc: Path) -> None:
    untagged = [line for line, language, _ in fences(doc) if not language]
    assert untagged == [], f"{doc.name}: fences at lines {untagged} name no language (bash, text, toml, ...)"


@pytest.mark.parametrize("cmd", ALL, ids=lambda c: f"{c.where} {c.text[:60]}")
def test_doc_command_is_valid(cmd: DocCommand) -> None:
    external = bool(cmd.argv) and cmd.argv[0] in EXTERNAL  # its settings are that program's
    for name, _ in cmd.assignments:
        assert external or project_reads(name) or script_setting(cmd, name), f"{cmd.where}: {name} is read nowhere"
    if not cmd.argv:
        return
    program, args = cmd.argv[0], list(cmd.argv[1:])
    if program == "python" and args[:1] == ["-m"] and len(args) > 1 and args[1] in EXTERNAL_MODULES:
        return
    if program == "idealab" or cmd.argv[:3] == ("python", "-m", "idealab"):
        try:
            parse_cli(args if program == "idealab" else args[2:])
        except BadUsage as exc:
            pytest.fail(f"{cmd.where}: `{cmd.text}`: {exc}")
    elif program == "make":
        assert set(args) <= make_targets(), f"{cmd.where}: no such make target in {args}"
    elif program in {"python", "sh"}:
        check_script(cmd, args)
    elif program == "export":
        for item in args:
            assert project_reads(item.partition("=")[0]), f"{cmd.where}: {item} is read nowhere in src/"
    elif program == "cd":
        assert (ROOT / cmd.cwd).is_dir(), f"{cmd.where}: no directory {cmd.cwd}"
    elif program == ".":
        assert args == [".venv/bin/activate"], f"{cmd.where}: sources {args}"
    else:
        assert program in EXTERNAL, f"{cmd.where}: unknown program {program!r}: add a check for it"


def check_script(cmd: DocCommand, args: list[str]) -> None:
    """`python x.py ...` / `sh x.sh ...`: the script exists where the block is, and knows each option used."""
    script = ROOT / cmd.cwd / args[0]
    assert script.is_file(), f"{cmd.where}: no script {script.relative_to(ROOT)}"
    options = [a.partition("=")[0] for a in args[1:] if a.startswith("--")]
    if not options:
        return
    helped = subprocess.run(
        [sys.executable, script.name, *[a for a in args[1:2] if not a.startswith("-")], "--help"],
        cwd=script.parent, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    unknown = [o for o in options if o not in helped.stdout]
    assert unknown == [], f"{cmd.where}: {script.name} has no option {unknown}"


# ------------------------------------------------------------------------------------ run as written


def run_as_written(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "idealab", *shlex.split(command)[1:]]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def stand_in_run(cwd: Path) -> None:
    """The run a doc's `status --workdir runs/charlm` reads: a one-idea run of the toy environment there."""
    argv = ["run", "--env", str(QUAD), "--epochs", "1", "--ideas-per-epoch", "1", "--workdir", "runs/charlm"]
    done = run_as_written(shlex.join(["idealab", *argv, "--quiet"]), cwd)
    assert done.returncode == 0, done.stderr


def test_the_commands_that_are_run_are_in_the_docs() -> None:
    shown = {c.text for c in ALL}
    assert RUN_FAST | RUN_SLOW <= shown


@pytest.mark.parametrize("command", sorted(RUN_FAST))
def test_fast_doc_command_runs(command: str, tmp_path: Path) -> None:
    if "runs/charlm" in command:
        stand_in_run(tmp_path)
    done = run_as_written(command, tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(RUN_SLOW))
def test_slow_doc_command_runs(command: str, tmp_path: Path) -> None:
    try:
        shakespeare_path()
    except DataError as exc:
        pytest.skip(f"needs the charlm data: {exc}")
    done = run_as_written(command, tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert '"status": "ok"' in done.stdout


def test_a_wrong_option_or_extra_argument_is_caught() -> None:
    with pytest.raises(BadUsage, match="unexpected extra argument"):
        parse_cli(["run", "nanogpt", "--model", "openai:gpt-5"])
    with pytest.raises(BadUsage, match="No such option"):
        parse_cli(["status", "--work-dir", "x"])
    parse_cli(["run", "--env", "nanogpt", "--ideator", "llm", "--model", "openai:gpt-5"])
