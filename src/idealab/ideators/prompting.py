"""Rendering the LLM prompts from the template files in `idealab/prompts/`.

Every word the models read lives in a template (one per role, shared fragments under `fragments/`); this
module only fills them in: the environment's description and rules, its editable and read-only files with
line numbers (never the hidden ones), past ideas with their scores, and the avoid-list.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template

from idealab.ideators.base import IdeaKind, IdeationRequest, PastIdea
from idealab.manifest import Manifest
from idealab.search.journal import Journal
from idealab.status import Status

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
ROLES = (
    "system_ideator",
    "system_implementer",
    "ideate_initial",
    "ideate_exploit",
    "ideate_explore",
    "implement",
    "revise",
    "system_auditor",
    "audit",
)
FRAGMENTS = (
    "environment",
    "rules",
    "idea_guidelines",
    "guidance",
    "idea_format",
    "idea_format_structured",
    "avoid",
    "change_format",
    "exploit_winners",
    "exploit_best_so_far",
    "exploit_no_baseline",
)
_IDEATION_ROLE = {
    IdeaKind.INITIAL: "ideate_initial",
    IdeaKind.EXPLOIT: "ideate_exploit",
    IdeaKind.EXPLORE: "ideate_explore",
}
# How an idea without a score is labelled for the ideator: exactly what became of it, one label per status.
STATUS_LABELS = {
    Status.UNIMPLEMENTABLE: "could not be implemented",
    Status.REFUSED: "refused: its change reached for the evaluation's internals",
    Status.FAILED: "ran and crashed",
    Status.TIMEOUT: "ran and timed out (exceeded the time limit)",
    Status.INVALID: "ran, but its metric was invalid or suspect",
    Status.TAMPERED: "rejected as suspect: the run changed a protected file",
    Status.CANCELLED: "not run (the search stopped first)",
}
_LANGUAGES = {".py": "python", ".toml": "toml", ".sh": "bash", ".json": "json", ".yaml": "yaml", ".md": "markdown"}


@functools.cache
def template(name: str) -> Template:
    """A role template (`ideate_initial`) or a fragment (`fragments/rules`)."""
    return Template((PROMPTS_DIR / f"{name}.md").read_text())


def render(name: str, values: Mapping[str, str]) -> str:
    """Fill a template; a placeholder without a value is a bug (KeyError), never left in a prompt."""
    return template(name).substitute(values).strip() + "\n"


def fragment(name: str, values: Mapping[str, str] | None = None) -> str:
    return render(f"fragments/{name}", values or {}).rstrip("\n")


# ------------------------------------------------------------------------------------------ pieces


def number_lines(text: str) -> str:
    lines = text.splitlines()
    width = max(4, len(str(len(lines))))
    return "\n".join(f"{i:>{width}} |{' ' if line else ''}{line}" for i, line in enumerate(lines, start=1))


def file_listing(manifest: Manifest, root: Path) -> str:
    """Every editable and read-only file, numbered. Hidden files are never read here."""
    parts: list[str] = []
    for rel in manifest.files.shown:
        kind = "editable" if rel in manifest.files.editable else "read-only"
        text = (root / rel).read_text(errors="replace")
        fence = "````" if "```" in text else "```"
        lang = _LANGUAGES.get(Path(rel).suffix, "")
        parts.append(f"### {rel} ({kind})\n\n{fence}{lang}\n{number_lines(text)}\n{fence}")
    return "\n\n".join(parts)


def format_metric(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def environment_section(manifest: Manifest, root: Path, baseline: float | None) -> str:
    baseline_line = (
        f" The unmodified environment (the baseline) scores {format_metric(baseline)}." if baseline is not None else ""
    )
    return fragment(
        "environment",
        {
            "name": manifest.name,
            "description": manifest.description.strip(),
            "metric_name": manifest.metric.name,
            "metric_goal": _goal_word(manifest),
            "baseline_line": baseline_line,
            "files": file_listing(manifest, root),
        },
    )


def rules_section(manifest: Manifest) -> str:
    hidden = (
        "- Some files of the evaluation are hidden from you: never create, change or try to read them.\n"
        if manifest.files.hidden
        else ""
    )
    env_rules = "".join(f"- {rule.strip()}\n" for rule in manifest.rules)
    return fragment("rules", {"hidden_rule": hidden, "env_rules": env_rules})


def _goal_word(manifest: Manifest) -> str:
    return "lower" if manifest.metric.goal.value == "minimize" else "higher"


def _indent_idea(text: str) -> str:
    lines = text.strip().splitlines() or [""]
    return "\n".join([lines[0], *("  " + line for line in lines[1:])])


def history_label(manifest: Manifest, journal: Journal[PastIdea], past: PastIdea) -> str:
    """`loss = 1.5, unconfirmed (1 run)`, `loss = 1.2 (mean of 3 runs, ...), beats the baseline`, `ran and
    crashed`, ...: confirmed means where they exist, and whether a result is inside the noise floor."""
    if journal.verdict(past) is None:
        return STATUS_LABELS.get(past.status, past.status.value)
    return journal.label(past, manifest.metric.name)


def history_lines(manifest: Manifest, request: IdeationRequest) -> str:
    """Exploit: the scored ideas, best first. Explore: the sample as given. Every idea labelled exactly."""
    journal = Journal.of(request.history, manifest.metric.goal, request.baseline, request.evidence)
    ideas = journal.ranked() if request.kind is IdeaKind.EXPLOIT else list(journal.entries)
    if not ideas:
        return "(none yet)"
    return "\n".join(f"- [{history_label(manifest, journal, p)}] {_indent_idea(p.text)}" for p in ideas)


def exploit_intro(manifest: Manifest, request: IdeationRequest) -> str:
    """What the exploit prompt's ideas are: winners, or the best so far when none beat the baseline."""
    if request.history_beat_baseline:
        name = "exploit_winners"
    else:
        name = "exploit_best_so_far" if request.baseline is not None else "exploit_no_baseline"
    return fragment(name, {"metric_name": manifest.metric.name, "metric_goal": _goal_word(manifest)})


def guidance_section(manifest: Manifest) -> str:
    """The environment's research direction (its manifest's `guidance`), or nothing when it has none."""
    if manifest.guidance is None:
        return ""
    examples = "".join(f"- {example.strip()}\n" for example in manifest.guidance.examples)
    text = fragment(
        "guidance",
        {"direction": manifest.guidance.direction.strip(), "examples": examples or "- (none given)\n"},
    )
    return text + "\n\n"  # a blank line before what follows


def avoid_section(avoid: Sequence[str]) -> str:
    if not avoid:
        return ""
    ideas = "\n".join(f"{i}. {_indent_idea(text)}" for i, text in enumerate(avoid, start=1))
    return fragment("avoid", {"ideas": ideas}) + "\n\n"  # a blank line before what follows


# ----------------------------------------------------------------------------------------- prompts


def ideation_prompt(manifest: Manifest, request: IdeationRequest, *, structured: bool = False) -> tuple[str, str]:
    """(system, user) for one batch of ideas of `request.kind`; `structured`: the answer is JSON (the
    request carries its schema), not the tagged format."""
    format_fragment = "idea_format_structured" if structured else "idea_format"
    values = {
        "environment": environment_section(manifest, manifest.root, request.baseline),
        "rules": rules_section(manifest),
        "guidelines": fragment("idea_guidelines"),
        "idea_format": fragment(format_fragment, {"count": str(request.count)}),
        "avoid": avoid_section(request.avoid),
        "count": str(request.count),
        "metric_name": manifest.metric.name,
        "metric_goal": _goal_word(manifest),
        "history": history_lines(manifest, request),
        "guidance": guidance_section(manifest),
    }
    if request.kind is IdeaKind.EXPLOIT:
        values["history_intro"] = exploit_intro(manifest, request)
    return render("system_ideator", {}), render(_IDEATION_ROLE[request.kind], values)


def implement_prompt(manifest: Manifest, root: Path, idea: str) -> tuple[str, str]:
    """(system, user) asking for a code change that implements `idea` against the files under `root`."""
    values = {
        "environment": environment_section(manifest, root, None),
        "rules": rules_section(manifest),
        "idea": idea.strip(),
        "change_format": fragment("change_format"),
    }
    return render("system_implementer", {}), render("implement", values)


_IDEA_MARK = "\x00idea\x00"  # never in a real idea: marks where the idea goes


def implement_prompt_stable_prefix(manifest: Manifest, root: Path) -> int:
    """How many characters every implement prompt for the files under `root` starts with, whatever the idea
    (the codebase and the rules): the part a provider's prompt cache can reuse across ideas and samples."""
    return implement_prompt(manifest, root, _IDEA_MARK)[1].index(_IDEA_MARK)


def revise_prompt(error: str) -> str:
    return render("revise", {"error": error.strip()})
