"""Guards refuse a change before compute is spent on it, with a reason fed back to the implementer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idealab.guards import check_changes, protected_regions
from idealab.manifest import PROTECT_BEGIN, PROTECT_END, load_manifest
from idealab.patching import FileChange

QUAD = Path(__file__).parent / "envs" / "quad"


@pytest.fixture
def manifest(tmp_path):
    env = tmp_path / "env"
    shutil.copytree(QUAD, env)
    (env / "evaluate.py").write_text("SECRET_SPLIT = 0.1\n")
    text = (env / "idealab.toml").read_text()
    text = text.replace('readonly = ["score.py"]', 'readonly = ["score.py"]\nhidden = ["evaluate.py"]')
    (env / "idealab.toml").write_text(text)
    train = (env / "train.py").read_text()
    (env / "train.py").write_text(train + f"# {PROTECT_BEGIN}\nTIME_LIMIT = 10\n# {PROTECT_END}\n")
    return load_manifest(env)


def edit(manifest, path, old, new):
    text = (manifest.root / path).read_text()
    assert old in text
    return FileChange(path, text, text.replace(old, new))


def test_a_clean_edit_passes(manifest):
    assert check_changes(manifest, [edit(manifest, "train.py", "X = 0.5", "X = 0.25")]) is None


def test_readonly_and_hidden_files_are_refused(manifest):
    reason = check_changes(manifest, [edit(manifest, "score.py", "1.0", "0.0")])
    assert "score.py" in reason and "read-only" in reason
    reason = check_changes(manifest, [edit(manifest, "evaluate.py", "0.1", "0.9")])
    assert "evaluate.py" in reason and "protected evaluation" in reason


def test_protected_region_is_refused(manifest):
    reason = check_changes(manifest, [edit(manifest, "train.py", "TIME_LIMIT = 10", "TIME_LIMIT = 99")])
    assert "protected region" in reason


def test_code_that_does_not_compile_is_refused(manifest):
    reason = check_changes(manifest, [edit(manifest, "train.py", "X = 0.5", "X = (0.5")])
    assert "does not compile" in reason


def test_printing_metric_lines_is_refused(manifest):
    reason = check_changes(manifest, [edit(manifest, "train.py", "X = 0.5", "X = 0.5\nprint('@metric {}')")])
    assert "metric line" in reason


def test_new_files_are_allowed_but_not_outside_the_environment(manifest):
    assert check_changes(manifest, [FileChange("helpers.py", None, "A = 1\n")]) is None
    assert "inside the environment" in check_changes(manifest, [FileChange("../x.py", None, "A = 1\n")])


def test_protected_regions_are_found():
    text = f"a\n# {PROTECT_BEGIN}\nb\n# {PROTECT_END}\nc\n# {PROTECT_BEGIN}\nd\n"
    assert protected_regions(text) == [f"# {PROTECT_BEGIN}\nb\n# {PROTECT_END}", f"# {PROTECT_BEGIN}\nd"]
