"""Every case of the diff corpus (benchmarks/diff_corpus) gives exactly its expected files, or a refusal."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from idealab.patching import apply_edit, write_changes

CORPUS = Path(__file__).resolve().parents[1] / "benchmarks" / "diff_corpus"
CASES = sorted(p for p in (CORPUS / "cases").iterdir() if p.is_dir())


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_corpus_is_large_and_labelled() -> None:
    kinds = {tomllib.loads((case / "case.toml").read_text())["kind"] for case in CASES}
    refusals = [case for case in CASES if not (case / "expected").exists()]
    assert len(CASES) >= 40 and len(refusals) >= 5
    assert {"wrong_counts", "wrong_line_numbers", "blank_context_unspaced", "whitespace_drift", "crlf"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_corpus_case(case: Path, tmp_path: Path) -> None:
    meta = tomllib.loads((case / "case.toml").read_text())
    env = tmp_path / "env"
    env.mkdir()
    for path, base in meta["files"].items():
        shutil.copyfile(CORPUS / "bases" / base, env / path)
    before = _tree(env)
    result = apply_edit(env, (case / "response.md").read_bytes().decode("utf-8"))
    assert _tree(env) == before, "apply_edit must not touch the root"
    if meta["expect"] == "refuse":
        assert not result.ok and result.changes == ()
        assert result.error
        return
    assert result.ok, result.error
    write_changes(env, result.changes)
    expected = dict(before)
    expected.update(_tree(case / "expected"))
    assert _tree(env) == expected
