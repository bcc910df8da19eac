"""Reading ideas out of an ideator's response.

The prompt asks for the released code's tagged format,

    [Experiment] <description> [Code Changes] <summary> [End]

and that format is recognised in any response, wrapped in prose, markdown emphasis or code fences. A JSON
list of objects with `experiment` (or `idea` / `description`) and `code_changes` keys is accepted as well,
for models that insist on JSON. Anything else yields no ideas (the search loop then asks again).

With structured output the answer is JSON that follows `IDEAS_SCHEMA` ({"ideas": [{"experiment": ...,
"code_changes": ...}]}), read by `parse_structured`; the ideas are the same `ParsedIdea`s either way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# A tag may be wrapped in markdown emphasis or heading marks and followed by a colon: "**[Experiment]:**".
_TAG = r"[#*_ \t]*\[\s*{name}\s*\][*_]*\s*:?[*_]*"
_EXPERIMENT = re.compile(_TAG.format(name="experiment"), re.IGNORECASE)
_CODE_CHANGES = re.compile(_TAG.format(name=r"code[ _-]*changes?"), re.IGNORECASE)
_END = re.compile(_TAG.format(name="end"), re.IGNORECASE)
_JSON_BLOCK = re.compile(r"```(?:json)?\s*(\[.*?\])\s*```", re.DOTALL)
_EXPERIMENT_KEYS = ("experiment", "idea", "description")
_CHANGES_KEYS = ("code_changes", "code changes", "changes", "implementation")


@dataclass(frozen=True)
class ParsedIdea:
    experiment: str
    code_changes: str = ""

    @property
    def text(self) -> str:
        """The idea as stored and shown later, in the tagged format without its end tag."""
        if not self.code_changes:
            return f"[Experiment] {self.experiment}"
        return f"[Experiment] {self.experiment}\n[Code Changes] {self.code_changes}"


IDEAS_TOOL = "submit_ideas"  # the structured output's name (Anthropic: the tool the model calls)
IDEAS_DESCRIPTION = "Submit the research ideas, each with what to try and the code changes it needs."


def ideas_schema(count: int, max_chars: int | None = None) -> dict[str, Any]:
    """The JSON schema of a structured ideation answer. Every key is required and no other is allowed
    (OpenAI's strict mode demands both). maxItems, and `max_chars` as each text's maxLength, bound what a
    grammar-constrained local model generates: a small one can otherwise write one string until the
    token limit cuts the JSON short. (OpenAI's strict mode rejects maxLength: hosted models get none.)"""
    bound = {"maxLength": max_chars} if max_chars is not None else {}
    experiment = {"type": "string", "description": "What to try and why, in a few sentences.", **bound}
    changes = {
        "type": "string",
        "description": "Which files and functions change, and how; new hyperparameter values.",
        **bound,
    }
    idea = {
        "type": "object",
        "properties": {"experiment": experiment, "code_changes": changes},
        "required": ["experiment", "code_changes"],
        "additionalProperties": False,
    }
    ideas = {"type": "array", "items": idea, "minItems": 1, "maxItems": max(1, count)}
    return {"type": "object", "properties": {"ideas": ideas}, "required": ["ideas"], "additionalProperties": False}


def parse_structured(response: str) -> list[ParsedIdea]:
    """The ideas of a structured answer (JSON of `ideas_schema`); [] when it is not that JSON, e.g. cut
    short at the token limit."""
    try:
        data = json.loads(response)
    except json.JSONDecodeError:
        return []
    return [idea for item in _items(data) if (idea := _from_object(item)) is not None]


def parse_ideas(response: str) -> list[ParsedIdea]:
    """Every idea in `response`, in order: tagged ones if there are any, else a JSON list's."""
    tagged = _parse_tagged(response)
    return tagged if tagged else _parse_json(response)


def _clean(text: str) -> str:
    text = text.strip().strip("`").strip()
    text = re.sub(r"(?:^|\n)\s*(?:\d+[.)]|[-*+])?\s*$", "", text)  # the next idea's list marker
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip(" \t\n*_-")


def _parse_tagged(response: str) -> list[ParsedIdea]:
    starts = list(_EXPERIMENT.finditer(response))
    ideas: list[ParsedIdea] = []
    for i, start in enumerate(starts):
        stop = starts[i + 1].start() if i + 1 < len(starts) else len(response)
        body = response[start.end() : stop]
        end = _END.search(body)
        if end is not None:
            body = body[: end.start()]
        elif i + 1 == len(starts):
            body = body.split("\n\n\n", 1)[0]  # an unterminated last idea: stop at the prose after it
        parts = _CODE_CHANGES.split(body, maxsplit=1)
        experiment = _clean(parts[0])
        changes = _clean(parts[1]) if len(parts) > 1 else ""
        if experiment:
            ideas.append(ParsedIdea(experiment, changes))
    return ideas


def _parse_json(response: str) -> list[ParsedIdea]:
    candidates = [m.group(1) for m in _JSON_BLOCK.finditer(response)]
    first, last = response.find("["), response.rfind("]")
    if first != -1 and last > first:
        candidates.append(response[first : last + 1])
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        ideas = [idea for item in _items(data) if (idea := _from_object(item)) is not None]
        if ideas:
            return ideas
    return []


def _items(data: Any) -> Iterable[Any]:
    if isinstance(data, dict) and isinstance(data.get("ideas"), list):
        return list(data["ideas"])
    return data if isinstance(data, list) else []


def _from_object(item: Any) -> ParsedIdea | None:
    if isinstance(item, str):
        return ParsedIdea(_clean(item)) if item.strip() else None
    if not isinstance(item, dict):
        return None
    lowered = {str(k).lower(): v for k, v in item.items()}
    experiment = next((lowered[k] for k in _EXPERIMENT_KEYS if isinstance(lowered.get(k), str)), "")
    changes = next((lowered[k] for k in _CHANGES_KEYS if isinstance(lowered.get(k), str)), "")
    return ParsedIdea(_clean(experiment), _clean(changes)) if experiment.strip() else None


def _key(text: str) -> str:
    words = (word.strip(".") for word in re.sub(r"[^a-z0-9.]+", " ", text.lower()).split())
    return " ".join(word for word in words if word)


def drop_repeats(ideas: Sequence[ParsedIdea], avoid: Iterable[str]) -> list[ParsedIdea]:
    """`ideas` without those already in `avoid` (stored idea texts) or earlier in the list."""
    seen: set[str] = set()
    for text in avoid:
        seen.add(_key(text))
        seen.update(_key(idea.experiment) for idea in _parse_tagged(text))
    kept: list[ParsedIdea] = []
    for idea in ideas:
        key = _key(idea.text)
        if key not in seen and _key(idea.experiment) not in seen:
            seen.add(key)
            seen.add(_key(idea.experiment))
            kept.append(idea)
    return kept
