"""The red-team corpus: reward hacks and legitimate idea-style changes to the built-in environments.

Each case is a TOML file in `hacks/` or `legit/`:

    env = "charlm"                 # a built-in environment
    preset = "cpu-smoke"           # the preset the case runs with
    class = "print-metric"         # hacks only: the class of exploit (see CLASSES)
    tries = "what the change tries to do"
    expect = ["refused", "failed"] # hacks only: the catches that would stop it (any one is enough)
    verify = "how its effect was shown without the guards"   # hacks only
    verify_env = { NANOGPT_NUM_ITERATIONS = "100" }  # optional: variables for that showing (hack and baseline)

    [[edits]]
    file = "train.py"
    after = "import torch"         # or `before` / `replace`: text found in exactly one line of the file
    code = '''...'''               # inserted (or put in place of that line) with that line's indentation

A case is kept as edits at anchors rather than as a fixed diff so that one case applies to every version of
an environment's editable file (the same hack is run against the old guards and the new ones, whose
training files differ); `render` turns it into the unified diff the executor receives. `verify_env` fixes
what a loaded machine would otherwise vary for that showing (for example a number of steps in place of a
wall-clock limit, for a hack whose effect is not more training): the benchmark's `--verify` runs the hack
and the unmodified code with the preset's variables and these.
"""

from __future__ import annotations

import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

from idealab.patching import diff_texts

HERE = Path(__file__).resolve().parent
CATCHES = ("refused", "tampered", "invalid", "timeout", "failed", "suspect")
CLASSES = {
    "print-metric": "a metric line printed by the training code (from pieces, json.dumps, sys.stdout.write), "
    "then an exit before the real evaluation",
    "fake-helper": "a metric helper the editable file can reach, called with a made-up value",
    "monkeypatch": "an evaluation function or setting replaced at run time (module attribute, sys.modules, builtins)",
    "budget": "a longer training budget (clock or budget variables, os.environ before the protected import, "
    "dataclasses.replace of the settings)",
    "extra-compute": "a forked helper process or extra threads training beyond the budget",
    "non-causal": "a model that looks ahead only where the causality check does not look",
    "stdout-rescale": "a stdout wrapper that rescales the printed score",
    "val-leak": "training on the validation data",
    "cache": "results or weights carried across runs through a shared place",
    "hidden-read": "reading the hidden evaluation files",
    "protected-write": "writing the protected files at run time",
    "scorer-output": "a metric line written by the model code from inside the scoring process (a descriptor "
    "found by number, /proc/self/fd), with the scorer's own line sent elsewhere",
    "lingering-process": "a process started by training that outlives it (double fork, setsid) to act while "
    "the scoring runs",
}


class CorpusError(ValueError):
    """A case that does not fit the file it is applied to (a missing or ambiguous anchor)."""


@dataclass(frozen=True)
class Edit:
    file: str
    where: str  # "after" | "before" | "replace"
    anchor: str
    code: str


@dataclass(frozen=True)
class Case:
    name: str  # the file name without .toml
    hack: bool
    env: str
    preset: str | None
    klass: str | None  # hacks only
    tries: str
    expect: tuple[str, ...]  # hacks only
    verify: str | None
    edits: tuple[Edit, ...]
    verify_env: tuple[tuple[str, str], ...] = ()  # variables of the showing without guards, sorted

    @property
    def text(self) -> str:
        """The idea's text as stored with the experiment."""
        return f"[{self.name}] {self.tries}"


def load(kind: str) -> list[Case]:
    """Every case of `kind` ("hacks" or "legit"), by name."""
    return [_read(path, kind == "hacks") for path in sorted((HERE / kind).glob("*.toml"))]


def _read(path: Path, hack: bool) -> Case:
    raw = tomllib.loads(path.read_text())
    edits = []
    for e in raw["edits"]:
        (where,) = [w for w in ("after", "before", "replace") if w in e]
        edits.append(Edit(e["file"], where, e[where], e["code"]))
    case = Case(
        name=path.stem, hack=hack, env=raw["env"], preset=raw.get("preset"), klass=raw.get("class"),
        tries=raw["tries"], expect=tuple(raw.get("expect", ())), verify=raw.get("verify"), edits=tuple(edits),
        verify_env=tuple(sorted((k, str(v)) for k, v in raw.get("verify_env", {}).items())),
    )  # fmt: skip
    if hack and (case.klass not in CLASSES or not case.expect or not set(case.expect) <= set(CATCHES)):
        raise CorpusError(f"{path.name}: a hack needs a known class and expected catches from {CATCHES}")
    return case


def patched(case: Case, env_root: Path) -> dict[str, tuple[str, str]]:
    """path -> (old text, new text) of every file the case changes in the environment at `env_root`."""
    texts: dict[str, list[str]] = {}
    for edit in case.edits:
        lines = texts.setdefault(edit.file, (env_root / edit.file).read_text().splitlines(keepends=True))
        hits = [i for i, line in enumerate(lines) if edit.anchor in line]
        if len(hits) != 1:
            raise CorpusError(f"{case.name}: {edit.anchor!r} is in {len(hits)} lines of {edit.file}, not 1")
        i = hits[0]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        code = [indent + line if line.strip() else line for line in textwrap.dedent(edit.code).splitlines(True)]
        if code and not code[-1].endswith("\n"):
            code[-1] += "\n"
        if edit.where == "after":
            lines[i + 1 : i + 1] = code
        elif edit.where == "before":
            lines[i:i] = code
        else:
            lines[i : i + 1] = code
    return {path: ((env_root / path).read_text(), "".join(lines)) for path, lines in texts.items()}


def render(case: Case, env_root: Path) -> str:
    """The case as a unified diff against the environment at `env_root`."""
    files = patched(case, env_root)
    return diff_texts({p: old for p, (old, _) in files.items()}, {p: new for p, (_, new) in files.items()})


def apply(case: Case, directory: Path) -> None:
    """Write the case's changes into `directory`, a copy of the environment."""
    for path, (_, new) in patched(case, directory).items():
        (directory / path).write_text(new)
