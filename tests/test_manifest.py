"""The environment manifest: loading, validation messages (file + field + expectation), presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from idealab.manifest import (
    Goal,
    ManifestError,
    MetricSpec,
    Reduce,
    load_manifest,
    resolve_env,
)

GOOD = """
name = "toy"
description = "A toy environment."
rules = ["Do not touch the evaluation."]

[run]
command = "python train.py"
timeout_s = 60
gpus = 1
env = { STEPS = 100, TAG = "${IDEALAB_JOB_ID}" }

[metric]
name = "val_loss"
goal = "minimize"
reduce = "min"
regex = 'val_loss:(?P<value>[0-9.]+)'
baseline = 3.3
valid_range = [2.5, 12]

[files]
editable = ["train.py"]
readonly = ["evaluate.py"]
hidden = ["data/answers.py"]

[knobs.LR]
file = "train.py"
low = 1e-4
high = 1e-2
log = true

[presets.smoke.run]
timeout_s = 5
gpus = 0

[presets.smoke.metric]
valid_range = [0, 100]
"""


def write_env(tmp_path: Path, text: str = GOOD) -> Path:
    root = tmp_path / "env"
    (root / "data").mkdir(parents=True, exist_ok=True)
    for rel in ("train.py", "evaluate.py", "data/answers.py"):
        (root / rel).write_text("LR = 0.001\n")
    (root / "idealab.toml").write_text(text)
    return root


def error_of(tmp_path: Path, old: str, new: str) -> str:
    assert old in GOOD, f"test bug: {old!r} is not in the good manifest"
    root = write_env(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ManifestError) as info:
        load_manifest(root)
    message = str(info.value)
    assert str(root / "idealab.toml") in message  # every error names the file
    return message


def test_good_manifest_loads(tmp_path: Path) -> None:
    m = load_manifest(write_env(tmp_path))
    assert (m.name, m.run.command, m.run.timeout_s, m.run.gpus) == ("toy", "python train.py", 60.0, 1)
    assert m.run.env == {"STEPS": "100", "TAG": "${IDEALAB_JOB_ID}"}  # substituted at job start, not here
    assert m.metric.goal is Goal.MINIMIZE and m.metric.reduce is Reduce.MIN and m.metric.baseline == 3.3
    assert m.metric.valid_range == (2.5, 12.0)
    assert m.files.protected == ("evaluate.py", "data/answers.py")
    assert m.files.shown == ("train.py", "evaluate.py")
    assert m.knobs["LR"].log and m.presets == ("smoke",) and m.preset is None
    assert m.rules == ("Do not touch the evaluation.",)


def test_metric_direction() -> None:
    low = MetricSpec("loss", Goal.MINIMIZE)
    high = MetricSpec("acc", Goal.MAXIMIZE)
    assert low.better(3.1, 3.2) and not low.better(3.2, 3.2)
    assert high.better(0.6, 0.5)
    assert low.best([3.3, 3.1, 3.2]) == 3.1 and high.best([0.4, 0.6]) == 0.6 and low.best([]) is None


def test_preset_merges_tables_over_the_manifest(tmp_path: Path) -> None:
    m = load_manifest(write_env(tmp_path), preset="smoke")
    assert m.preset == "smoke"
    assert m.run.timeout_s == 5 and m.run.gpus == 0
    assert m.run.command == "python train.py"  # untouched fields keep the manifest's values
    assert m.run.env == {"STEPS": "100", "TAG": "${IDEALAB_JOB_ID}"}
    assert m.metric.valid_range == (0.0, 100.0) and m.metric.reduce is Reduce.MIN


def test_unknown_preset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no preset named 'fast'.*smoke"):
        load_manifest(write_env(tmp_path), preset="fast")


@pytest.mark.parametrize(
    ("old", "new", "field", "expectation"),
    [
        ('command = "python train.py"\n', "", "run.command", "non-empty string"),
        ("timeout_s = 60", "timeout_s = -1", "run.timeout_s", "positive number"),
        ("timeout_s = 60", 'timeout_s = "long"', "run.timeout_s", "finite number"),
        ("gpus = 1", "gpus = 1.5", "run.gpus", "non-negative integer"),
        ('goal = "minimize"', 'goal = "lower"', "metric.goal", "'minimize' or 'maximize'"),
        ('reduce = "min"', 'reduce = "mean"', "metric.reduce", "'last' or 'min' or 'max'"),
        ("regex = 'val_loss:(?P<value>[0-9.]+)'", "regex = 'val_loss:[0-9.]+'", "metric.regex", "group"),
        ("regex = 'val_loss:(?P<value>[0-9.]+)'", "regex = 'val_loss:(['", "metric.regex", "valid regular"),
        ("valid_range = [2.5, 12]", "valid_range = [12, 2.5]", "metric.valid_range", "low <= high"),
        ('editable = ["train.py"]', 'editable = ["missing.py"]', "files.editable", "an existing file"),
        ('editable = ["train.py"]', "editable = []", "files.editable", "at least one file"),
        ('readonly = ["evaluate.py"]', 'readonly = ["train.py"]', "files.readonly", "one list only"),
        ('hidden = ["data/answers.py"]', 'hidden = ["../x.py"]', "files.hidden", "relative"),
        ('file = "train.py"', 'file = "evaluate.py"', "knobs.LR.file", "files.editable"),
        ("high = 1e-2", "high = 1e-5", "knobs.LR.high", "greater than low"),
        ('name = "toy"', 'name = "toy"\ncolour = "red"', "colour", "known fields"),
        ("[presets.smoke.run]", "[presets.smoke.files2]", "presets.smoke.files2", "known fields"),
        ("env = { STEPS = 100,", "env = { MAX_TOKENS = 100,", "run.env.MAX_TOKENS", "does not look like a credential"),
        ("valid_range = [2.5, 12]", "valid_range = [nan, nan]", "metric.valid_range", "finite numbers"),
        ("valid_range = [2.5, 12]", "valid_range = [0, inf]", "metric.valid_range", "finite numbers"),
        ("valid_range = [2.5, 12]", "valid_range = [-inf, 12]", "metric.valid_range", "finite numbers"),
        ("baseline = 3.3", "baseline = nan", "metric.baseline", "finite number"),
        ("timeout_s = 60", "timeout_s = 60\npreflight_timeout_s = -5", "run.preflight_timeout_s", "positive number"),
        ("timeout_s = 60", "timeout_s = 60\npreflight_timeout_s = 0", "run.preflight_timeout_s", "positive number"),
        ("timeout_s = 60", "timeout_s = inf", "run.timeout_s", "finite number"),
        ('env = { STEPS = 100, TAG = "${IDEALAB_JOB_ID}" }', "env = true", "run.env", "a table"),
        ("env = { STEPS = 100,", "env = { STEPS = true,", "run.env.STEPS", "a string"),
        ("env = { STEPS = 100,", "env = { STEPS = [1, 2],", "run.env.STEPS", "a string"),
        ('command = "python train.py"', "command = true", "run.command", "non-empty string"),
        ("log = true", "log = 1", "knobs.LR.log", "true or false"),
        ('rules = ["Do not touch the evaluation."]', "rules = true", "rules", "list of non-empty strings"),
        ("timeout_s = 5\ngpus = 0", "timeout_s = 5\ngpus = true", "run.gpus", "(with presets.smoke applied)"),
    ],
)
def test_validation_errors_name_field_and_expectation(
    tmp_path: Path, old: str, new: str, field: str, expectation: str
) -> None:
    message = error_of(tmp_path, old, new)
    assert f"field '{field}'" in message
    assert expectation in message


def test_missing_and_unparsable_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest found"):
        load_manifest(tmp_path)
    root = write_env(tmp_path, "name = [unclosed\n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_manifest(root)


def test_non_utf8_manifest_and_editable_file_are_named(tmp_path: Path) -> None:
    root = write_env(tmp_path)
    (root / "idealab.toml").write_bytes(GOOD.replace("A toy", "A \xe9 toy").encode("latin-1"))
    with pytest.raises(ManifestError, match=r"idealab\.toml: not UTF-8 text"):
        load_manifest(root)
    root = write_env(tmp_path)
    (root / "train.py").write_bytes(b"LR = 0.001  # \xff\xfe\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(root)
    assert f"{root / 'train.py'}: not UTF-8 text" in str(info.value) and "files.editable" in str(info.value)


def test_a_broken_preset_is_reported_without_choosing_it(tmp_path: Path) -> None:
    root = write_env(tmp_path, GOOD.replace("timeout_s = 5\n", "timeout_s = -5\n"))
    with pytest.raises(ManifestError, match=r"run.timeout_s' \(with presets.smoke applied\)"):
        load_manifest(root)


def test_resolve_env_by_path_and_unknown_name(tmp_path: Path) -> None:
    root = write_env(tmp_path)
    assert resolve_env(str(root)) == root.resolve()
    with pytest.raises(ManifestError, match="no idealab.toml in this directory"):
        resolve_env(str(tmp_path))
    with pytest.raises(ManifestError, match="unknown environment 'no-such-env'"):
        resolve_env("no-such-env")


def test_slurm_options_of_the_run(tmp_path: Path) -> None:
    with_slurm = GOOD.replace("[metric]", '[run.slurm]\noptions = ["--constraint=h100", "--exclusive"]\n\n[metric]')
    assert load_manifest(write_env(tmp_path, with_slurm)).run.slurm_options == ("--constraint=h100", "--exclusive")
    assert load_manifest(write_env(tmp_path)).run.slurm_options == ()
    bad = GOOD.replace("[metric]", '[run.slurm]\noption = ["--exclusive"]\n\n[metric]')
    with pytest.raises(ManifestError, match="run.slurm.option"):
        load_manifest(write_env(tmp_path, bad))
