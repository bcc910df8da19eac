"""Knobs: module-level `NAME = <number>` assignments that the `mutate` ideator may change."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from idealab.manifest import Knob, Manifest

Number = int | float
_NUMBER = r"[-+]?(?:\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"


class KnobError(ValueError):
    """A knob's assignment is missing, repeated, or not a plain number."""


def _pattern(name: str) -> re.Pattern[str]:
    # Only unindented assignments: a knob is a module-level constant, not a local variable.
    return re.compile(rf"^(?P<head>{re.escape(name)}\s*(?::\s*\w+\s*)?=\s*)(?P<value>{_NUMBER})(?P<tail>.*)$")


def _find(text: str, knob: Knob) -> tuple[int, re.Match[str]]:
    pattern = _pattern(knob.name)
    hits = [(i, m) for i, line in enumerate(text.splitlines()) if (m := pattern.match(line))]
    if len(hits) != 1:
        what = "no" if not hits else f"{len(hits)}"
        raise KnobError(f"{knob.file}: {what} module-level assignment `{knob.name} = <number>` (need exactly one)")
    return hits[0]


def parse_number(literal: str) -> Number:
    cleaned = literal.replace("_", "")
    if re.fullmatch(r"[-+]?\d+", cleaned):
        return int(cleaned)
    return float(cleaned)


def format_value(knob: Knob, value: Number) -> str:
    if knob.integer:
        return str(int(round(value)))
    text = f"{float(value):.3g}" if knob.log else f"{float(value):.4g}"
    if "e" not in text and "." not in text:
        text += ".0"  # keep it a float literal
    return text


def read_values(manifest: Manifest, texts: Mapping[str, str] | None = None) -> dict[str, Number]:
    """Current value of every knob, read from the environment's files (or the given texts)."""
    values: dict[str, Number] = {}
    for name, knob in manifest.knobs.items():
        text = texts[knob.file] if texts is not None else (manifest.root / knob.file).read_text()
        _, match = _find(text, knob)
        values[name] = parse_number(match.group("value"))
    return values


def set_values(manifest: Manifest, texts: Mapping[str, str], values: Mapping[str, Number]) -> dict[str, str]:
    """New file texts with the given knobs' assignment lines rewritten; other lines untouched."""
    out = dict(texts)
    for name, value in values.items():
        knob = manifest.knobs[name]
        text = out[knob.file]
        index, match = _find(text, knob)
        lines = text.splitlines(keepends=True)
        ending = lines[index][len(lines[index].rstrip("\r\n")) :]
        lines[index] = f"{match.group('head')}{format_value(knob, value)}{match.group('tail')}{ending}"
        out[knob.file] = "".join(lines)
    return out


def knob_files(manifest: Manifest, root: Path | None = None) -> dict[str, str]:
    base = root or manifest.root
    return {f: (base / f).read_text() for f in sorted({k.file for k in manifest.knobs.values()})}


def clip(knob: Knob, value: float) -> Number:
    value = min(max(value, knob.low), knob.high)
    return int(round(value)) if knob.integer else value


def to_unit(knob: Knob, value: float) -> float:
    """Map a value into [0, 1] on the knob's scale (log or linear)."""
    if knob.log:
        return (math.log(value) - math.log(knob.low)) / (math.log(knob.high) - math.log(knob.low))
    return (value - knob.low) / (knob.high - knob.low)


def from_unit(knob: Knob, u: float) -> Number:
    u = min(max(u, 0.0), 1.0)
    if knob.log:
        value = math.exp(math.log(knob.low) + u * (math.log(knob.high) - math.log(knob.low)))
    else:
        value = knob.low + u * (knob.high - knob.low)
    return clip(knob, value)
