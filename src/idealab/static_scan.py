"""The scan behind `static_checks`: an AST visitor that records what a Python file does that an honest
idea never needs, each finding with a key (stable across unrelated edits) and a reason for the implementer."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import PurePosixPath

from idealab.manifest import MetricSpec
from idealab.static_output import OutputText, looks_like_metric

PROCESS_MODULES = ("subprocess", "multiprocessing", "torch.multiprocessing", "threading", "_thread",
                   "concurrent.futures", "pty")  # fmt: skip
PROCESS_CALLS = ("os.fork", "os.forkpty", "os.system", "os.popen", "os.spawn", "os.exec", "os.posix_spawn")
EXIT_CALLS = ("sys.exit", "exit", "quit", "os._exit")  # allowed only as a failure (non-zero constant code)
KILL_CALLS = ("os.abort", "os.kill", "os.killpg", "signal.")
FRAME_CALLS = ("sys._getframe", "inspect.currentframe", "inspect.stack", "inspect.getouterframes",
               "inspect.getinnerframes", "inspect.trace", "gc.get_objects", "gc.get_referrers",
               "gc.get_referents", "sys.settrace", "sys.setprofile", "threading.settrace",
               "sys.addaudithook", "object.__setattr__", "object.__delattr__")  # fmt: skip
FRAME_ATTRIBUTES = {"f_back", "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame", "cr_frame",
                    "ag_frame", "__traceback__", "__globals__", "__code__", "__closure__", "__subclasses__",
                    "__builtins__"}  # fmt: skip
DYNAMIC_CALLS = ("exec", "eval", "compile", "__import__", "importlib.", "runpy.")
STREAM_NAMES = ("sys.stdout", "sys.stderr", "sys.__stdout__", "sys.__stderr__")
THREAD_SETTINGS = ("torch.set_num_threads", "torch.set_num_interop_threads")
ENV_METHODS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
LOG_METHODS = {"info", "warning", "warn", "error", "debug", "critical", "log", "exception"}


@dataclass(frozen=True)
class Surface:
    """What the evaluation protects, read from the manifest."""

    hidden_modules: frozenset[str]  # hidden files and the scorer: never imported by editable code
    protected_modules: frozenset[str]  # read-only and hidden modules: their objects are never written
    protected_paths: tuple[str, ...]  # files (and private data globs) a change may not name
    protected_env: tuple[str, ...]  # variable names, or PREFIX* patterns
    metric: MetricSpec
    allow_processes: bool


@dataclass(frozen=True)
class Finding:
    key: str  # the kind and what it names, stable across unrelated edits (no line numbers)
    line: int
    reason: str


# ------------------------------------------------------------------------------------------ the scanner


class Scan(ast.NodeVisitor):
    def __init__(self, surface: Surface) -> None:
        self.s = surface
        self.findings: list[Finding] = []
        self.aliases: dict[str, str] = {}  # local name -> the dotted thing it was imported as
        self.protected_names: dict[str, str] = {}  # local name -> protected module it came from
        self.assigned: dict[str, ast.expr] = {}  # name -> the last expression assigned to it
        self.defined: set[str] = set()  # functions and classes the file defines
        self.docstrings: set[int] = set()

    def prepare(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    local = a.asname or a.name.split(".")[0]
                    self.aliases[local] = a.name if a.asname else local
                    if _top(a.name, self.s.protected_modules):
                        self.protected_names[local] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                    if _top(node.module, self.s.protected_modules) and a.name != "*":
                        self.protected_names[a.asname or a.name] = node.module
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.defined.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assigned[target.id] = node.value
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    self.docstrings.add(id(body[0].value))

    def flag(self, node: ast.AST, key: str, reason: str) -> None:
        self.findings.append(Finding(key, getattr(node, "lineno", 0), reason))

    def dotted(self, node: ast.AST) -> str | None:
        """`F.cross_entropy` -> 'torch.nn.functional.cross_entropy' through the file's imports."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    # ----------------------------------------------------------------------------------- imports

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.check_module(node, a.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            self.check_module(node, node.module)
            for a in node.names:
                if a.name == "*" and _top(node.module, self.s.protected_modules):
                    self.flag(node, f"star:{node.module}", f"`from {node.module} import *` imports everything from "
                              "a protected module; import the names you use explicitly")
                else:
                    self.check_dotted(node, f"{node.module}.{a.name}")
        self.generic_visit(node)

    def check_module(self, node: ast.AST, module: str) -> None:
        if _top(module, self.s.hidden_modules):
            self.flag(node, f"hidden:{module}", f"imports `{module}`, which is part of the hidden evaluation; "
                      "the evaluation runs on its own after training, so the change must not use it")
        elif _top(module, ("builtins", "ctypes")):
            self.flag(node, f"module:{module}", f"imports `{module}`, which can change the interpreter itself; "
                      "an idea never needs it")
        elif not self.s.allow_processes and _top(module, PROCESS_MODULES):
            self.flag(node, f"process:{module}", _process_reason(module))

    # ------------------------------------------------------------------------------------- calls

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        if name is not None:
            self.check_call(node, name)
        if not self.s.allow_processes:
            for kw in node.keywords:
                if kw.arg == "num_workers" and not _is_zero(kw.value):
                    self.flag(node, "process:num_workers", "sets `num_workers` (worker processes) but this "
                              "environment runs one process: load data in the main process (num_workers=0)")
        self.generic_visit(node)

    def check_call(self, node: ast.Call, name: str) -> None:
        if _matches(name, EXIT_CALLS) and not _failure_code(node):
            self.flag(node, f"exit:{name}", f"calls `{name}` so that the program ends early or with success "
                      "before the end of the script; let it end normally (to fail, raise an exception or exit "
                      "with a non-zero code)")
        elif _matches(name, KILL_CALLS):
            self.flag(node, f"signal:{name}", f"calls `{name}`: signals and killing processes are the "
                      "executor's; the program must run to its end")
        elif _matches(name, DYNAMIC_CALLS) and not _static_import(node, name):
            self.flag(node, f"dynamic:{name}", f"calls `{name}`, which runs or imports code that cannot be "
                      "checked; write the code (and its imports) out plainly")
        elif not self.s.allow_processes and _matches(name, PROCESS_CALLS + THREAD_SETTINGS):
            self.flag(node, f"process:{name}", _process_reason(name))
        elif name in ("setattr", "delattr", "getattr") and len(node.args) >= 2:
            self.check_reflection(node, name)
        elif name == "dataclasses.replace" and node.args and self.root_protected(node.args[0]):
            self.flag(node, "replace:protected", "uses dataclasses.replace on settings of a protected "
                      "module; the evaluation's settings are fixed")
        elif name in ("os.putenv", "os.unsetenv") and node.args:
            self.check_env_key(node, node.args[0])
        elif name.startswith("os.environ.") and name.rsplit(".", 1)[1] in ENV_METHODS:
            self.check_env_call(node)
        elif name in ("contextlib.redirect_stdout", "contextlib.redirect_stderr", "os.dup2"):
            self.flag(node, f"stream:{name}", f"calls `{name}`: standard output is read by the executor "
                      "as it is; print progress instead of redirecting it")
        elif name == "importlib.import_module" and node.args and isinstance(node.args[0], ast.Constant):
            self.check_module(node, str(node.args[0].value))
        if name == "print" or name.endswith((".write", ".writelines")) or _is_log(name):
            self.check_output(node, name)

    def check_reflection(self, node: ast.Call, name: str) -> None:
        """getattr / setattr / delattr: a literal attribute is checked like `obj.attr`; on a module, a
        computed one is refused."""
        obj, attr = node.args[0], node.args[1]
        owner = self.dotted(obj)
        literal = isinstance(attr, ast.Constant) and isinstance(attr.value, str)
        spelled = _constant_text(attr)  # a name given whole or in literal pieces ("tb_" + "frame")
        if spelled in FRAME_ATTRIBUTES:
            self.flag(node, f"attr:{spelled}", f"uses `{name}(..., {spelled!r})`, which reaches into another "
                      "function's frame, globals or code; an idea works on its own code")
            return
        if literal and owner is not None:
            self.check_dotted(node, f"{owner}.{getattr(attr, 'value', '')}")
        if name == "getattr":
            # `getattr(F, ACTIVATION)` is an ordinary pattern; a computed name on the interpreter's modules
            # (`getattr(sys, "mod" + "ules")`) or a protected one is not
            sensitive = _top(owner or "", ("sys", "os", "builtins", "gc", "inspect", "importlib"))
            if not literal and owner is not None and (sensitive or self.root_protected(obj)):
                self.flag(node, f"dynamic:getattr:{owner}", f"reads an attribute of `{owner}` by a computed "
                          "name, which cannot be checked; use the attribute by its name")
            return
        if self.root_protected(obj):
            self.flag(node, f"protected-write:{owner}", f"uses {name} on `{owner}`, which belongs to a "
                      "protected module; the evaluation's code and settings are fixed")
        elif owner is not None and self.is_module(obj) and (
            _top(owner, ("sys", "os", "builtins")) or not literal
            or (len(node.args) > 2 and self.callable_value(node.args[2]))
        ):
            self.flag(node, f"module-write:{owner}", f"uses {name} on the module `{owner}`; an idea changes "
                      "its own code, not the modules it imports")

    def check_dotted(self, node: ast.AST, name: str) -> None:
        if name == "sys.modules" or name.startswith("sys.modules."):
            self.flag(node, "sys.modules", "uses `sys.modules`, the table of loaded modules (patching it "
                      "replaces modules the evaluation imports); import modules normally")
        elif _matches(name, FRAME_CALLS):
            self.flag(node, f"frames:{name}", f"uses `{name}`, which reaches into other code's frames or "
                      "objects; an idea works on its own code")
        elif name.startswith("builtins."):
            self.flag(node, "builtins", "touches `builtins`; an idea never needs to change built-in functions")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in FRAME_ATTRIBUTES:
            self.flag(node, f"attr:{node.attr}", f"uses `.{node.attr}`, which reaches into another "
                      "function's frame, globals or code; an idea works on its own code")
        elif isinstance(node.value, ast.Name):  # the innermost attribute of a chain: checked once
            name = self.dotted(node)
            if name is not None:
                self.check_dotted(node, name)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self.flag(node, "builtins", "uses `__builtins__`; an idea never needs to change built-in functions")
        elif node.id in self.aliases and isinstance(node.ctx, ast.Load):
            self.check_dotted(node, self.aliases[node.id])
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self.docstrings:
            for path in self.s.protected_paths:
                if names_path(node.value, path):
                    self.flag(node, f"path:{path}", path_reason(path))
        self.generic_visit(node)

    # ------------------------------------------------------------------------------------ writes

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self.check_target(node, target, "assigns", node.value)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.check_target(node, node.target, "assigns", node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.check_target(node, node.target, "assigns", node.value)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self.check_target(node, target, "deletes")
        self.generic_visit(node)

    def check_target(self, node: ast.AST, target: ast.expr, verb: str, value: ast.expr | None = None) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self.check_target(node, element, verb)
            return
        if isinstance(target, ast.Starred):
            self.check_target(node, target.value, verb)
            return
        if isinstance(target, ast.Name):
            if target.id in self.protected_names:
                module = self.protected_names[target.id]
                self.flag(node, f"rebind:{target.id}", f"rebinds `{target.id}`, which comes from the protected "
                          f"module `{module}`; its value is fixed: use a new name for a value of your own")
            return
        if not isinstance(target, ast.Attribute | ast.Subscript):
            return
        whole, owner = self.dotted(target), self.dotted(target.value)
        namespace = self.module_namespace(target.value) if isinstance(target, ast.Subscript) else None
        if namespace is not None:
            self.flag(node, f"patch:{namespace}", f"{verb} an entry of the namespace of the module `{namespace}` "
                      "(`vars(module)[...]`, `module.__dict__[...]`); code outside this file (the evaluation "
                      "among it) would see it: keep values and functions of your own in your own names")
        elif owner == "os.environ" and isinstance(target, ast.Subscript):
            self.check_env_key(node, target.slice)
        elif whole == "os.environ":
            self.flag(node, "env:computed", env_reason(None))
        elif whole in STREAM_NAMES or owner in STREAM_NAMES:
            self.flag(node, f"stream:{whole or owner}", "replaces the standard output or error stream (or its "
                      "methods), which the executor reads as it is; print progress instead")
        elif self.root_protected(target.value):
            what = whole or owner or _root_name(target.value)
            self.flag(node, f"protected-write:{what}", f"{verb} `{what}`, which belongs to the protected "
                      f"module `{self.protected_names[_root_name(target.value) or '']}`; the evaluation's code and "
                      "settings are fixed")
        elif (isinstance(target, ast.Attribute) and value is not None and self.is_module(target.value)
              and self.callable_value(value)):  # fmt: skip
            self.flag(node, f"patch:{whole}", f"replaces `{whole}` of an imported module with a function of "
                      "its own; code outside this file (the evaluation among it) would call yours: define a "
                      "function with a new name and call it from your code instead")

    def module_namespace(self, node: ast.AST) -> str | None:
        """The module whose namespace `node` is (`vars(module)`, `module.__dict__`), else None."""
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "vars"
                and len(node.args) == 1 and self.is_module(node.args[0])):  # fmt: skip
            return self.dotted(node.args[0]) or _root_name(node.args[0])
        if isinstance(node, ast.Attribute) and node.attr == "__dict__" and self.is_module(node.value):
            return self.dotted(node.value) or _root_name(node.value)
        return None

    def root_protected(self, node: ast.AST) -> bool:
        root = _root_name(node)
        return root is not None and root in self.protected_names

    def is_module(self, node: ast.AST) -> bool:
        root = _root_name(node)
        return root is not None and root in self.aliases

    def callable_value(self, value: ast.expr) -> bool:
        if isinstance(value, ast.Lambda):
            return True
        if isinstance(value, ast.Name):
            return value.id in self.defined
        if isinstance(value, ast.Call):
            return self.dotted(value.func) in ("functools.partial", "functools.wraps")
        return False

    # ----------------------------------------------------------------------------------- environment

    def check_env_call(self, node: ast.Call) -> None:
        keys: list[ast.expr] = []
        for kw in node.keywords:
            if kw.arg is None:
                self.flag(node, "env:computed", env_reason(None))
            else:
                keys.append(ast.Constant(kw.arg))
        for arg in node.args[:1]:
            if isinstance(arg, ast.Dict):
                keys.extend(k if k is not None else ast.Name("**") for k in arg.keys)
            elif not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                self.flag(node, "env:computed", env_reason(None))
            else:
                keys.append(arg)
        if not node.args and not node.keywords:
            self.flag(node, "env:computed", env_reason(None))  # clear() / popitem()
        for key in keys:
            self.check_env_key(node, key)

    def check_env_key(self, node: ast.AST, key: ast.expr) -> None:
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            self.flag(node, "env:computed", env_reason(None))
            return
        for pattern in self.s.protected_env:
            if fnmatch(key.value, pattern):
                self.flag(node, f"env:{key.value}", env_reason(key.value))
                return

    # ----------------------------------------------------------------------------------- output

    def check_output(self, node: ast.Call, name: str) -> None:
        renderer = OutputText(self.assigned, self.dotted)
        pieces = [renderer.render(arg, 0) for arg in node.args]
        for text in (" ".join(pieces), "".join(pieces)):
            if looks_like_metric(text, self.s.metric):
                self.flag(node, f"metric-output:{name}", f"`{name}` writes text that reads as a value of the "
                          f"metric `{self.s.metric.name}`; only the evaluation reports the metric: print "
                          "progress under another name (e.g. 'train_loss')")
                return


def _top(module: str, names: Iterable[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name.startswith(p) if p.endswith((".", "_")) or p in ("os.spawn", "os.exec", "os.posix_spawn")
               else name == p for p in patterns)  # fmt: skip


def _constant_text(node: ast.expr) -> str | None:
    """The text of a string literal, or of literals joined with `+`; None for anything computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _constant_text(node.left), _constant_text(node.right)
        return left + right if left is not None and right is not None else None
    return None


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_zero(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value in (0, None, False)


def _failure_code(node: ast.Call) -> bool:
    """An exit with a constant non-zero code or a message: the run fails, which scores nothing."""
    if len(node.args) != 1:
        return False
    arg = node.args[0]
    if isinstance(arg, ast.Constant):
        return isinstance(arg.value, str) or (isinstance(arg.value, int) and arg.value not in (0, False))
    return isinstance(arg, ast.JoinedStr)


def _static_import(node: ast.Call, name: str) -> bool:
    """`importlib.import_module("math")`, and `re.compile`-like calls that only share a name."""
    if name == "importlib.import_module":
        return bool(node.args) and isinstance(node.args[0], ast.Constant)
    return False


def _is_log(name: str) -> bool:
    head, _, method = name.rpartition(".")
    return method in LOG_METHODS and head.split(".")[-1] in ("logging", "logger", "log", "LOGGER", "LOG")


def names_path(text: str, path: str) -> bool:
    text = text.strip()
    if not text or "\n" in text and len(text) > 200:
        return False
    if any(ch in path for ch in "*?["):
        return fnmatch(text, path) or fnmatch(text, "*/" + path) or re.search(
            r"(^|/)" + re.escape(PurePosixPath(path).name).replace(r"\*", r"[^/]*"), text) is not None
    return text == path or text.endswith("/" + path) or re.search(
        r"(^|[/\s'\"])" + re.escape(path) + r"($|[\s'\"])", text) is not None


def path_reason(path: str) -> str:
    return (f"names the protected file or data `{path}`; the evaluation's files and held-out data are not "
            "for the change to open: use the data the protected code hands you")


def env_reason(name: str | None) -> str:
    if name is None:
        return ("changes environment variables through a name or mapping that cannot be checked; set only "
                "variables of your own, by a literal name")
    return (f"sets the environment variable `{name}`, which the environment's manifest or the executor fixes "
            "(budget, seed, threads); leave it as it is")


def _process_reason(what: str) -> str:
    return (f"uses `{what}`: this environment's manifest does not allow extra processes or threads (compute "
            "outside the measured budget); keep the work in the one training process")
