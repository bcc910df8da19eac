"""What an output call of a changed file would print, rendered statically (for `static_checks`).

Constants are kept as they are, through `+`, f-strings, `%`, `.format`, `.join`, `json.dumps`, `str` and
names assigned in the file; every other value prints as a number. The text is then tested as the metric
parser would read it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping

from idealab.manifest import MetricSpec
from idealab.metric_stream import METRIC_LINE_PREFIX, values_in_line

_UNKNOWN = "1.5"  # what a value that is not a constant prints as
_NEAR_NUMBER = r"[^0-9\n]{0,24}?-?\d"  # the metric's name followed closely by a number
_MAX_DEPTH = 6


class OutputText:
    def __init__(self, assigned: Mapping[str, ast.expr], dotted: Callable[[ast.AST], str | None]) -> None:
        self.assigned = assigned  # name -> the last expression the file assigns to it
        self.dotted = dotted  # `F.x` -> 'torch.nn.functional.x' through the file's imports

    def render(self, node: ast.AST, depth: int) -> str:
        """What an expression prints as, with values that are not constants shown as a number."""
        if depth > _MAX_DEPTH:
            return _UNKNOWN
        nxt = depth + 1
        if isinstance(node, ast.Constant):
            value = node.value
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if isinstance(node, ast.JoinedStr):
            return "".join(self.render(v, nxt) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            return self.render(node.value, nxt)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.render(node.left, nxt) + self.render(node.right, nxt)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return re.sub(r"%[-#0-9.+ ]*[a-zA-Z]", _UNKNOWN, self.render(node.left, nxt))
        if isinstance(node, ast.Name):
            assigned = self.assigned.get(node.id)
            return _UNKNOWN if assigned is None else self.render(assigned, nxt)
        if isinstance(node, ast.Dict):
            pairs = zip(node.keys, node.values, strict=True)
            items = [f'"{self.render(k, nxt)}": {self.render_json(v, nxt)}' for k, v in pairs if k is not None]
            return "{" + ", ".join(items) + "}"
        if isinstance(node, ast.List | ast.Tuple):
            return ", ".join(self.render(e, nxt) for e in node.elts)
        if isinstance(node, ast.Call):
            return self.render_call(node, nxt)
        return _UNKNOWN

    def render_call(self, node: ast.Call, depth: int) -> str:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "format":
            template = self.render(func.value, depth)
            positional = iter([self.render(a, depth) for a in node.args])
            named = {kw.arg: self.render(kw.value, depth) for kw in node.keywords if kw.arg}

            def fill(match: re.Match[str]) -> str:
                field = match.group(1).split(":")[0].split("!")[0]
                return named.get(field, _UNKNOWN) if field and not field.isdigit() else next(positional, _UNKNOWN)

            return re.sub(r"\{([^{}]*)\}", fill, template)
        if isinstance(func, ast.Attribute) and func.attr == "join" and node.args:
            arg = node.args[0]
            elements = arg.elts if isinstance(arg, ast.List | ast.Tuple) else [arg]
            return self.render(func.value, depth).join(self.render(e, depth) for e in elements)
        name = self.dotted(func)
        if name in ("json.dumps", "str", "repr", "format") and node.args:
            arg = node.args[0]
            return self.render_json(arg, depth) if name == "json.dumps" else self.render(arg, depth)
        return _UNKNOWN

    def render_json(self, node: ast.AST, depth: int) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return f'"{node.value}"'
        return self.render(node, depth)


def looks_like_metric(text: str, metric: MetricSpec) -> bool:
    if METRIC_LINE_PREFIX.strip() in text:
        return True
    for line in text.splitlines() or [text]:
        if any(v[0] == metric.name for v in values_in_line(line, metric.name, metric.regex)):
            return True
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(metric.name)}(?![A-Za-z0-9_]){_NEAR_NUMBER}", text) is not None
