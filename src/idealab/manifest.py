"""The environment contract: a directory with an `idealab.toml` manifest.

Everything that differs between environments (command, resources, metric and its direction, which files
may be edited, knobs, presets) is declared here; the orchestrator never branches on an environment's name.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from idealab.credentials import is_credential
from idealab.paths import builtin_envs_dir

MANIFEST_NAME = "idealab.toml"

# Lines between these markers (matched anywhere in a line, so any comment syntax works) are a protected
# region of an editable file: the implementer may not change them.
PROTECT_BEGIN = "idealab: protected-begin"
PROTECT_END = "idealab: protected-end"


class ManifestError(ValueError):
    """An invalid manifest; the message names the file, the field and what is expected."""


class Goal(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def better(self, a: float, b: float) -> bool:
        """True when value a is strictly better than b in this direction."""
        return a < b if self is Goal.MINIMIZE else a > b

    def rank_key(self, value: float) -> float:
        """Sort key that puts the best value first."""
        return value if self is Goal.MINIMIZE else -value


class Reduce(StrEnum):
    LAST = "last"
    MIN = "min"
    MAX = "max"


@dataclass(frozen=True)
class RunSpec:
    command: str
    timeout_s: float
    gpus: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    setup: str | None = None  # prepares data once (`idealab env prepare`), run in the environment dir
    preflight: str | None = None  # short check run on a changed copy before a real job is spent on it
    preflight_timeout_s: float = 300.0
    seed_env: str | None = None  # a variable of the environment's own that also gets the job's seed
    seed_flag: str | None = None  # a command-line flag that gets the job's seed, e.g. "--seed"
    network: bool = False  # the job may open network connections (else: only a loopback of its own)
    allow_env: tuple[str, ...] = ()  # variables (or PREFIX*) jobs may see besides the default allow-list
    sandbox: str | None = None  # "require": never run without bubblewrap; "auto"/"off"; None: the CLI's
    memory_mb: int | None = None  # address-space limit of each job process
    max_open_files: int | None = None
    max_file_mb: int | None = None  # the largest file a job may write
    max_processes: int | None = None  # processes and threads of a job at once (a pids cgroup)
    max_disk_mb: int | None = None  # all files a job writes together (measured by its supervisor)
    # the editable code may start processes and threads (workers): without it the static checks refuse
    # a change that imports subprocess / multiprocessing / threading or forks (docs/reward_hacking.md)
    allow_processes: bool = False
    slurm_options: tuple[str, ...] = ()  # `[run.slurm] options`: sbatch options the jobs need on a cluster


@dataclass(frozen=True)
class MetricSpec:
    name: str
    goal: Goal
    reduce: Reduce = Reduce.LAST
    regex: re.Pattern[str] | None = None
    baseline: float | None = None
    valid_range: tuple[float, float] | None = None
    # A run stopped by its time limit is still scored from the values it printed before (as the paper's
    # GRPO runs were); its status stays TIMEOUT and its reason says the metric is partial.
    partial_on_timeout: bool = False
    # The best value physically possible (0 for a loss, 1.0 for an accuracy): a result at or near it is
    # flagged suspect (docs/statistics.md).
    bound: float | None = None

    def better(self, a: float, b: float) -> bool:
        """True when value a is strictly better than b in this metric's direction."""
        return self.goal.better(a, b)

    def rank_key(self, value: float) -> float:
        """Sort key that puts the best value first."""
        return self.goal.rank_key(value)

    def best(self, values: list[float]) -> float | None:
        if not values:
            return None
        return min(values) if self.goal is Goal.MINIMIZE else max(values)

    def in_range(self, value: float) -> bool:
        if self.valid_range is None:
            return True
        low, high = self.valid_range
        return low <= value <= high


@dataclass(frozen=True)
class ScoreSpec:
    """The scoring step (`[score]`): a fresh process, run after training exited 0, whose stdout alone gives
    the result. It runs in a scoring directory holding pristine copies of the protected files plus the
    editable files as the job ran them, reads the training's artefact from IDEALAB_ARTEFACT_DIR, and is the
    only process that sees `private_data` (globs relative to the data directory)."""

    command: str
    timeout_s: float = 600.0  # wall-clock limit of the scoring process
    private_data: tuple[str, ...] = ()
    preflight_command: str | None = None  # a preflight check's quick scoring (None: the preflight is not scored)
    # the metric's name is the scorer's alone: a training-time line reporting it is a forged claim (TAMPERED)
    exclusive_metric: bool = False


class Clock(StrEnum):
    CPU = "cpu"  # user + system time summed over every process of the job's tree
    WALL = "wall"  # wall-clock time since the training command started


@dataclass(frozen=True)
class BudgetSpec:
    """The training budget (`[budget]`), measured and enforced by the executor: at `seconds` the training
    processes get SIGUSR1, at `seconds + grace_s` the whole tree is killed and the job is a timeout."""

    seconds: float
    clock: Clock = Clock.WALL
    grace_s: float = 10.0


@dataclass(frozen=True)
class FileRules:
    editable: tuple[str, ...]
    readonly: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()

    @property
    def protected(self) -> tuple[str, ...]:
        """Files that must be byte-identical after any change and any run."""
        return self.readonly + self.hidden

    @property
    def shown(self) -> tuple[str, ...]:
        """Files shown to ideators and implementers (never the hidden ones)."""
        return self.editable + self.readonly


@dataclass(frozen=True)
class Knob:
    """A module-level `NAME = <number>` assignment in `file`, searched within [low, high]."""

    name: str
    file: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Guidance:
    """Research direction for the ideators: what kinds of ideas this environment is for, with examples of
    the flavour (to go beyond, not to repeat). Shown in every ideation prompt."""

    direction: str
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchDefaults:
    """Search settings this environment suggests (the command line overrides them)."""

    ideas_per_epoch: int | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    root: Path
    run: RunSpec
    metric: MetricSpec
    files: FileRules
    knobs: Mapping[str, Knob]
    rules: tuple[str, ...] = ()  # environment-specific rules added to every LLM prompt
    presets: tuple[str, ...] = ()
    preset: str | None = None
    guidance: Guidance | None = None
    search: SearchDefaults = field(default_factory=SearchDefaults)
    score: ScoreSpec | None = None  # None: the training command's own metric lines are the result (weaker)
    budget: BudgetSpec | None = None  # None: only run.timeout_s limits the training

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME


# --------------------------------------------------------------------------------------------- loading

_TOP_KEYS = {
    "name", "description", "rules", "run", "metric", "files", "knobs", "presets", "guidance", "search", "score",
    "budget",
}  # fmt: skip
_RUN_KEYS = {
    "command", "timeout_s", "gpus", "env", "setup", "preflight", "preflight_timeout_s", "seed_env", "seed_flag",
    "network", "allow_env", "sandbox", "memory_mb", "max_open_files", "max_file_mb", "max_processes",
    "allow_processes", "max_disk_mb", "slurm",
}  # fmt: skip
_METRIC_KEYS = {"name", "goal", "reduce", "regex", "baseline", "valid_range", "partial_on_timeout", "bound"}
_GUIDANCE_KEYS = {"direction", "examples"}
_SEARCH_KEYS = {"ideas_per_epoch"}
_FILES_KEYS = {"editable", "readonly", "hidden"}
_SCORE_KEYS = {"command", "timeout_s", "private_data", "preflight_command", "exclusive_metric"}
_BUDGET_KEYS = {"seconds", "clock", "grace_s"}
_KNOB_KEYS = {"file", "low", "high", "log", "integer"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Reader:
    """Typed field access that raises ManifestError naming the file and the dotted field."""

    def __init__(self, path: Path, preset: str | None = None) -> None:
        self.path = path
        self.preset = preset  # set while checking a preset's merged manifest: errors say which preset

    def fail(self, fieldname: str, expected: str, got: Any = None, show_got: bool = True) -> ManifestError:
        tail = f", got {got!r}" if show_got else ""
        where = f" (with {self.preset} applied)" if self.preset else ""
        return ManifestError(f"{self.path}: field '{fieldname}'{where}: expected {expected}{tail}")

    def table(self, data: Mapping[str, Any], key: str, prefix: str, required: bool = True) -> dict[str, Any]:
        where = f"{prefix}{key}"
        if key not in data:
            if required:
                raise self.fail(where, "a table", show_got=False)
            return {}
        value = data[key]
        if not isinstance(value, dict):
            raise self.fail(where, "a table", value)
        return value

    def no_unknown(self, data: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(f"{prefix}{key}", f"one of the known fields {sorted(allowed)}", key, False)

    def string(self, data: Mapping[str, Any], key: str, prefix: str, default: str | None = None) -> str:
        where = f"{prefix}{key}"
        if key not in data:
            if default is None:
                raise self.fail(where, "a non-empty string (required)", show_got=False)
            return default
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "a non-empty string", value)
        return value

    def optional_string(self, data: Mapping[str, Any], key: str, prefix: str) -> str | None:
        if key not in data:
            return None
        return self.string(data, key, prefix)

    def number(self, data: Mapping[str, Any], key: str, prefix: str, default: float | None = None) -> float:
        where = f"{prefix}{key}"
        if key not in data:
            if default is None:
                raise self.fail(where, "a number (required)", show_got=False)
            return default
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(where, "a finite number", value)
        return float(value)

    def boolean(self, data: Mapping[str, Any], key: str, prefix: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{prefix}{key}", "true or false", value)
        return value

    def string_list(self, data: Mapping[str, Any], key: str, prefix: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{prefix}{key}", "a list of non-empty strings", value)
        return tuple(value)

    def choice(self, data: Mapping[str, Any], key: str, prefix: str, enum: type[StrEnum], default: Any) -> Any:
        value = data.get(key, default)
        try:
            return enum(value)
        except ValueError:
            options = " or ".join(repr(m.value) for m in enum)
            raise self.fail(f"{prefix}{key}", options, value) from None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge a preset's tables over the manifest's (tables merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _parse_run(r: _Reader, raw: dict[str, Any]) -> RunSpec:
    run = r.table(raw, "run", "")
    r.no_unknown(run, _RUN_KEYS, "run.")
    timeout_s = r.number(run, "timeout_s", "run.")
    if timeout_s <= 0:
        raise r.fail("run.timeout_s", "a positive number of seconds", timeout_s)
    gpus = run.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise r.fail("run.gpus", "a non-negative integer", gpus)
    env = run.get("env", {})
    if not isinstance(env, dict):
        raise r.fail("run.env", "a table of variable = string", env)
    for var, value in env.items():
        # bool is an int in Python: without the explicit check `X = true` became the string "True"
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise r.fail(f"run.env.{var}", "a string (or a number)", value)
    for var in env:
        if is_credential(var):
            raise r.fail(
                f"run.env.{var}",
                "a name that does not look like a credential (names containing KEY, TOKEN, SECRET, PASSWORD "
                "or a provider prefix are removed from every job's environment, so this setting would be lost)",
                var,
                show_got=False,
            )
    preflight_timeout = r.number(run, "preflight_timeout_s", "run.", default=300.0)
    if preflight_timeout <= 0:
        raise r.fail("run.preflight_timeout_s", "a positive number of seconds", preflight_timeout)
    sandbox = r.optional_string(run, "sandbox", "run.")
    if sandbox is not None and sandbox not in ("auto", "require", "off"):
        raise r.fail("run.sandbox", '"auto", "require" or "off"', sandbox)
    limits = {}
    for key in ("memory_mb", "max_open_files", "max_file_mb", "max_processes", "max_disk_mb"):
        value = run.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise r.fail(f"run.{key}", "a positive integer", value)
        limits[key] = value
    slurm = r.table(run, "slurm", "run.", required=False)
    r.no_unknown(slurm, {"options"}, "run.slurm.")
    return RunSpec(
        command=r.string(run, "command", "run."),
        timeout_s=timeout_s,
        gpus=gpus,
        env={str(k): str(v) for k, v in env.items()},
        setup=r.optional_string(run, "setup", "run."),
        preflight=r.optional_string(run, "preflight", "run."),
        preflight_timeout_s=preflight_timeout,
        seed_env=r.optional_string(run, "seed_env", "run."),
        seed_flag=r.optional_string(run, "seed_flag", "run."),
        network=r.boolean(run, "network", "run.", default=False),
        allow_env=r.string_list(run, "allow_env", "run."),
        sandbox=sandbox,
        allow_processes=r.boolean(run, "allow_processes", "run.", default=False),
        slurm_options=r.string_list(slurm, "options", "run.slurm."),
        **limits,
    )


def _parse_metric(r: _Reader, raw: dict[str, Any]) -> MetricSpec:
    metric = r.table(raw, "metric", "")
    r.no_unknown(metric, _METRIC_KEYS, "metric.")
    regex = None
    pattern = r.optional_string(metric, "regex", "metric.")
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise r.fail("metric.regex", f"a valid regular expression ({exc})", pattern) from None
        if "value" not in regex.groupindex and regex.groups != 1:
            raise r.fail("metric.regex", "a regex with a (?P<value>...) group or exactly one group", pattern)
    valid_range = None
    if "valid_range" in metric:
        vr = metric["valid_range"]
        ok = isinstance(vr, list) and len(vr) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in vr
        )
        if not ok or vr[0] > vr[1]:
            raise r.fail("metric.valid_range", "[low, high] of finite numbers with low <= high", vr)
        valid_range = (float(vr[0]), float(vr[1]))
    baseline = r.number(metric, "baseline", "metric.") if "baseline" in metric else None
    bound = r.number(metric, "bound", "metric.") if "bound" in metric else None
    return MetricSpec(
        name=r.string(metric, "name", "metric."),
        goal=r.choice(metric, "goal", "metric.", Goal, None),
        reduce=r.choice(metric, "reduce", "metric.", Reduce, "last"),
        regex=regex,
        baseline=baseline,
        valid_range=valid_range,
        partial_on_timeout=r.boolean(metric, "partial_on_timeout", "metric.", False),
        bound=bound,
    )


def _parse_guidance(r: _Reader, raw: dict[str, Any]) -> Guidance | None:
    guidance = r.table(raw, "guidance", "", required=False)
    if not guidance:
        return None
    r.no_unknown(guidance, _GUIDANCE_KEYS, "guidance.")
    return Guidance(
        direction=r.string(guidance, "direction", "guidance."),
        examples=r.string_list(guidance, "examples", "guidance."),
    )


def _parse_search(r: _Reader, raw: dict[str, Any]) -> SearchDefaults:
    search = r.table(raw, "search", "", required=False)
    r.no_unknown(search, _SEARCH_KEYS, "search.")
    ideas = search.get("ideas_per_epoch")
    if ideas is not None and (isinstance(ideas, bool) or not isinstance(ideas, int) or ideas < 1):
        raise r.fail("search.ideas_per_epoch", "a positive integer", ideas)
    return SearchDefaults(ideas_per_epoch=ideas)


def _parse_score(r: _Reader, raw: dict[str, Any]) -> ScoreSpec | None:
    if "score" not in raw:
        return None
    score = r.table(raw, "score", "")
    r.no_unknown(score, _SCORE_KEYS, "score.")
    timeout_s = r.number(score, "timeout_s", "score.", default=600.0)
    if timeout_s <= 0:
        raise r.fail("score.timeout_s", "a positive number of seconds", timeout_s)
    private = r.string_list(score, "private_data", "score.")
    for rel in private:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise r.fail("score.private_data", "paths (globs) relative to the data directory", rel)
    return ScoreSpec(
        command=r.string(score, "command", "score."), timeout_s=timeout_s, private_data=private,
        preflight_command=r.optional_string(score, "preflight_command", "score."),
        exclusive_metric=r.boolean(score, "exclusive_metric", "score.", default=False),
    )  # fmt: skip


def _parse_budget(r: _Reader, raw: dict[str, Any], run: RunSpec) -> BudgetSpec | None:
    if "budget" not in raw:
        return None
    budget = r.table(raw, "budget", "")
    r.no_unknown(budget, _BUDGET_KEYS, "budget.")
    seconds = r.number(budget, "seconds", "budget.")
    if seconds <= 0:
        raise r.fail("budget.seconds", "a positive number of seconds", seconds)
    grace_s = r.number(budget, "grace_s", "budget.", default=10.0)
    if grace_s < 0:
        raise r.fail("budget.grace_s", "a number of seconds >= 0", grace_s)
    clock = r.choice(budget, "clock", "budget.", Clock, "wall")
    if clock is Clock.WALL and seconds >= run.timeout_s:
        raise r.fail(
            "budget.seconds",
            f"a wall-clock budget below run.timeout_s ({run.timeout_s:g} s, the limit of the whole job)",
            seconds,
        )
    return BudgetSpec(seconds=seconds, clock=clock, grace_s=grace_s)


def _parse_files(r: _Reader, raw: dict[str, Any], root: Path) -> FileRules:
    files = r.table(raw, "files", "")
    r.no_unknown(files, _FILES_KEYS, "files.")
    rules = FileRules(
        editable=r.string_list(files, "editable", "files."),
        readonly=r.string_list(files, "readonly", "files."),
        hidden=r.string_list(files, "hidden", "files."),
    )
    if not rules.editable:
        raise r.fail("files.editable", "at least one file that ideas may change", [])
    seen: dict[str, str] = {}
    for kind in ("editable", "readonly", "hidden"):
        for rel in getattr(rules, kind):
            where = f"files.{kind}"
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise r.fail(where, "paths relative to the environment directory", rel)
            if rel in seen:
                raise r.fail(where, f"each file in one list only ('{rel}' is also in files.{seen[rel]})", rel)
            seen[rel] = kind
            if not (root / rel).is_file():
                raise r.fail(where, f"an existing file under {root}", rel)
    for rel in rules.editable:  # changes are computed and applied as UTF-8 text
        try:
            (root / rel).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"{root / rel}: not UTF-8 text ({exc.reason} at byte {exc.start}); files.editable lists it, "
                "and editable files must be UTF-8 text"
            ) from None
    return rules


def _parse_knobs(r: _Reader, raw: dict[str, Any], files: FileRules) -> dict[str, Knob]:
    knobs = r.table(raw, "knobs", "", required=False)
    parsed: dict[str, Knob] = {}
    for name, spec in knobs.items():
        prefix = f"knobs.{name}."
        if not _IDENTIFIER.match(name):
            raise r.fail(f"knobs.{name}", "a Python identifier as the knob name", name)
        if not isinstance(spec, dict):
            raise r.fail(f"knobs.{name}", "a table", spec)
        r.no_unknown(spec, _KNOB_KEYS, prefix)
        knob = Knob(
            name=name,
            file=r.string(spec, "file", prefix),
            low=r.number(spec, "low", prefix),
            high=r.number(spec, "high", prefix),
            log=r.boolean(spec, "log", prefix, False),
            integer=r.boolean(spec, "integer", prefix, False),
        )
        if knob.file not in files.editable:
            raise r.fail(f"{prefix}file", f"one of files.editable {list(files.editable)}", knob.file)
        if knob.low >= knob.high:
            raise r.fail(f"{prefix}high", f"a number greater than low ({knob.low})", knob.high)
        if knob.log and knob.low <= 0:
            raise r.fail(f"{prefix}low", "a positive number when log = true", knob.low)
        parsed[name] = knob
    return parsed


def load_manifest(env_dir: Path | str, preset: str | None = None) -> Manifest:
    """Read and validate `<env_dir>/idealab.toml`, applying the named preset's overrides."""
    root = Path(env_dir).resolve()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest found (an environment directory needs {MANIFEST_NAME})")
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); TOML must be UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    r = _Reader(path)
    r.no_unknown(raw, _TOP_KEYS, "")
    presets = r.table(raw, "presets", "", required=False)
    for pname, pvalue in presets.items():
        if not isinstance(pvalue, dict):
            raise r.fail(f"presets.{pname}", "a table of overrides", pvalue)
        r.no_unknown(pvalue, _TOP_KEYS - {"presets", "name"}, f"presets.{pname}.")
    if preset is not None and preset not in presets:
        raise ManifestError(
            f"{path}: field 'presets': no preset named {preset!r}; known presets: {sorted(presets) or 'none'}"
        )
    for other in presets:  # a broken preset is reported when the manifest is loaded, not when it is chosen
        if other != preset:
            _parse(_Reader(path, f"presets.{other}"), _merge(raw, presets[other]), root, presets, other)
    return _parse(r, _merge(raw, presets[preset]) if preset else raw, root, presets, preset)


def _parse(r: _Reader, raw: dict[str, Any], root: Path, presets: Mapping[str, Any], preset: str | None) -> Manifest:
    files = _parse_files(r, raw, root)
    run = _parse_run(r, raw)
    return Manifest(
        name=r.string(raw, "name", ""),
        description=r.string(raw, "description", ""),
        root=root,
        run=run,
        metric=_parse_metric(r, raw),
        files=files,
        knobs=_parse_knobs(r, raw, files),
        rules=r.string_list(raw, "rules", ""),
        presets=tuple(presets),
        preset=preset,
        guidance=_parse_guidance(r, raw),
        search=_parse_search(r, raw),
        score=_parse_score(r, raw),
        budget=_parse_budget(r, raw, run),
    )


# ------------------------------------------------------------------------------------------- discovery


def builtin_env_names() -> list[str]:
    base = builtin_envs_dir()
    return sorted(p.name for p in base.iterdir() if (p / MANIFEST_NAME).is_file())


def resolve_env(name_or_path: str) -> Path:
    """A built-in environment by name, or any directory holding a manifest by path."""
    candidate = Path(name_or_path).expanduser()
    if (candidate / MANIFEST_NAME).is_file():
        return candidate.resolve()
    builtin = builtin_envs_dir() / name_or_path
    if "/" not in name_or_path and (builtin / MANIFEST_NAME).is_file():
        return builtin
    if candidate.exists():
        raise ManifestError(f"{candidate}: no {MANIFEST_NAME} in this directory")
    raise ManifestError(
        f"unknown environment {name_or_path!r}: not a directory with {MANIFEST_NAME}, "
        f"and not a built-in environment (built-in: {', '.join(builtin_env_names()) or 'none'})"
    )
