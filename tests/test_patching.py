"""apply_edit / write_changes / diff_texts on real files: each malformation, refusals, all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from idealab.patching import StaleChangeError, apply_edit, diff_texts, diff_trees, write_changes

TRAIN = """import torch


def get_lr(it):
    if it < warmup:
        return lr * it / warmup
    return lr


def step(model, opt):
    opt.zero_grad()
    loss = model()
    loss.backward()
    opt.step()
    return loss


def evaluate(model):
    model.eval()
    loss = model()
    model.train()
    return loss
"""

LR_DIFF = """--- a/train.py
+++ b/train.py
@@ -4,4 +4,5 @@
 def get_lr(it):
     if it < warmup:
         return lr * it / warmup
+    lr_min = 0.1 * lr
     return lr
"""
LR_RESULT = TRAIN.replace(
    "        return lr * it / warmup\n", "        return lr * it / warmup\n    lr_min = 0.1 * lr\n"
)


@pytest.fixture
def env(tmp_path: Path) -> Path:
    root = tmp_path / "env"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "util.py").write_text("def helper():\n    return 1\n")
    return root


def _new(env: Path, response: str) -> str:
    result = apply_edit(env, response)
    assert result.ok, result.error
    (change,) = result.changes
    assert change.path == "train.py" and change.old_text == TRAIN and change.new_text is not None
    return change.new_text


def test_clean_diff_goes_through_git_apply(env: Path) -> None:
    result = apply_edit(env, LR_DIFF)
    assert result.ok and result.method == "git-apply"
    assert result.changes[0].new_text == LR_RESULT
    assert (env / "train.py").read_text() == TRAIN  # computed, not written


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(f"Sure! Here is the change:\n\n```diff\n{LR_DIFF}```\n\nIt adds a floor.", id="fenced_prose"),
        pytest.param(LR_DIFF.replace("a/train.py", "train.py").replace("b/train.py", "train.py"), id="bare_paths"),
        pytest.param(LR_DIFF.replace("a/train.py", "./train.py"), id="dot_slash"),
        pytest.param(LR_DIFF.replace("@@ -4,4 +4,5 @@", "@@ -4,2 +4,9 @@"), id="wrong_counts"),
        pytest.param(LR_DIFF.replace("@@ -4,4 +4,5 @@", "@@ -30,4 +30,5 @@"), id="wrong_line_numbers"),
        pytest.param(LR_DIFF.replace("@@ -4,4 +4,5 @@", "@@ ... @@"), id="no_line_numbers"),
        pytest.param(
            LR_DIFF.replace("     if it", "     if it  ").replace("     return lr\n", "\treturn lr\n"),
            id="whitespace_drift",
        ),
        pytest.param(LR_DIFF.replace("\n", "\r\n"), id="crlf_response"),
        pytest.param(LR_DIFF.replace("--- a/train.py\n", ""), id="missing_minus_header"),
        pytest.param(LR_DIFF.replace("@@ -4,4 +4,5 @@\n", ""), id="no_at_at_line"),
    ],
)
def test_malformed_diffs_apply_exactly(env: Path, response: str) -> None:
    assert _new(env, response) == LR_RESULT


def test_blank_context_line_without_space(env: Path) -> None:
    diff = (
        "--- a/train.py\n+++ b/train.py\n@@ -7,5 +7,5 @@\n     return lr\n\n\n-def step(model, opt):\n"
        "+def step(model, opt, scaler=None):\n     opt.zero_grad()\n"
    )
    assert _new(env, diff) == TRAIN.replace("def step(model, opt):", "def step(model, opt, scaler=None):")


def test_tab_indented_context_maps_added_lines_to_spaces(env: Path) -> None:
    diff = (
        "--- a/train.py\n+++ b/train.py\n@@ -12,3 +12,4 @@\n \tloss = model()\n \tloss.backward()\n"
        "+\ttorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n \topt.step()\n"
    )
    result = apply_edit(env, diff)
    assert result.ok and result.method == "fuzzy"
    assert "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    opt.step()" in (
        result.changes[0].new_text or ""
    )
    assert any("ignoring whitespace" in note for note in result.notes)


def test_hunks_out_of_order_and_moved(env: Path) -> None:
    diff = (
        "--- a/train.py\n+++ b/train.py\n"
        "@@ -19,3 +19,3 @@\n def evaluate(model):\n-    model.eval()\n"
        "+    model.eval()  # no dropout\n     loss = model()\n"
        "@@ -1,3 +1,4 @@\n import torch\n+import math\n \n \n"
    )
    new = _new(env, diff)
    assert new.startswith("import torch\nimport math\n") and "model.eval()  # no dropout" in new
    # with its numbers wrong too, git cannot take it; the fuzzy matcher places both hunks by content
    shifted = diff.replace("@@ -19,3 +19,3 @@", "@@ -25,3 +25,3 @@").replace("@@ -1,3 +1,4 @@", "@@ -2,3 +2,4 @@")
    result = apply_edit(env, shifted)
    assert result.ok and result.changes[0].new_text == new


def test_crlf_file_keeps_crlf(env: Path) -> None:
    (env / "train.py").write_bytes(TRAIN.replace("\n", "\r\n").encode())
    result = apply_edit(env, LR_DIFF)
    assert result.ok and result.changes[0].new_text == LR_RESULT.replace("\n", "\r\n")


def test_missing_final_newline_is_kept_without_markers(env: Path) -> None:
    (env / "cfg.py").write_text("seed = 1\nsteps = 10")
    result = apply_edit(env, "--- a/cfg.py\n+++ b/cfg.py\n@@ -1,2 +1,2 @@\n seed = 1\n-steps = 10\n+steps = 20\n")
    assert result.ok and result.changes[0].new_text == "seed = 1\nsteps = 20"


def test_new_file_from_dev_null(env: Path) -> None:
    result = apply_edit(env, "--- /dev/null\n+++ b/pkg/extra.py\n@@ -0,0 +1,2 @@\n+X = 1\n+Y = 2\n")
    assert result.ok
    (change,) = result.changes
    assert (change.path, change.old_text, change.new_text) == ("pkg/extra.py", None, "X = 1\nY = 2\n")
    write_changes(env, result.changes)
    assert (env / "pkg" / "extra.py").read_text() == "X = 1\nY = 2\n"


def test_ambiguous_context_is_refused_naming_the_hunk(env: Path) -> None:
    # `loss = model()` then `model.train()`/`loss.backward()` differ, but `loss = model()` alone occurs twice
    diff = "--- a/train.py\n+++ b/train.py\n@@ -40,1 +40,2 @@\n     loss = model()\n+    loss = loss.float()\n"
    result = apply_edit(env, diff)
    assert not result.ok and result.changes == ()
    assert result.error is not None and "hunk 1 of train.py" in result.error and "2 times" in result.error


def test_ambiguous_context_at_stated_line_is_applied(env: Path) -> None:
    diff = "--- a/train.py\n+++ b/train.py\n@@ -20,1 +20,2 @@\n     loss = model()\n+    loss = loss.float()\n"
    new = _new(env, diff)
    assert (
        new.count("loss = loss.float()") == 1 and "    model.eval()\n    loss = model()\n    loss = loss.float()" in new
    )


def test_non_whitespace_difference_is_refused(env: Path) -> None:
    diff = LR_DIFF.replace("         return lr * it / warmup", "         return lr * (it + 1) / warmup")
    result = apply_edit(env, diff)
    assert not result.ok
    assert result.error is not None and "hunk 1 of train.py" in result.error and "(it + 1)" in result.error


def test_multi_file_is_all_or_nothing(env: Path) -> None:
    good = LR_DIFF
    bad = "--- a/util.py\n+++ b/util.py\n@@ -1,2 +1,2 @@\n def helper():\n-    return 2\n+    return 3\n"
    result = apply_edit(env, good + bad)
    assert not result.ok and result.changes == ()
    assert result.error is not None and "util.py" in result.error and "train.py" not in result.error
    both = apply_edit(env, good + bad.replace("return 2", "return 1"))
    assert both.ok and [c.path for c in both.changes] == ["train.py", "util.py"]


def test_search_replace_happy_path_and_whitespace_fallback(env: Path) -> None:
    response = (
        "train.py\n```python\n<<<<<<< SEARCH\n    opt.step()\n    return loss\n=======\n    opt.step()\n"
        "    opt.zero_grad()\n    return loss\n>>>>>>> REPLACE\n```\n\nutil.py\n<<<<<<< SEARCH\n\treturn 1\n"
        "=======\n\treturn 2\n>>>>>>> REPLACE\n"
    )
    result = apply_edit(env, response)
    assert result.ok and result.method == "search-replace", result.error
    texts = {c.path: c.new_text for c in result.changes}
    assert texts["train.py"] == TRAIN.replace("    opt.step()\n", "    opt.step()\n    opt.zero_grad()\n")
    assert texts["util.py"] == "def helper():\n    return 2\n"


def test_search_replace_no_match_and_ambiguous(env: Path) -> None:
    missing = apply_edit(env, "train.py\n<<<<<<< SEARCH\n    opt.step(closure)\n=======\n    pass\n>>>>>>> REPLACE\n")
    assert not missing.ok and missing.error is not None
    assert "block 1 for train.py" in missing.error and "not in train.py" in missing.error
    twice = apply_edit(env, "train.py\n<<<<<<< SEARCH\n    loss = model()\n=======\n    pass\n>>>>>>> REPLACE\n")
    assert not twice.ok and twice.error is not None and "2 times" in twice.error


@pytest.mark.parametrize(
    "response",
    [
        "No diff here, just prose.",
        "--- a/../outside.py\n+++ b/../outside.py\n@@ -1 +1 @@\n-a\n+b\n",
        "--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-a\n+b\n",
    ],
    ids=["no_change", "path_escape", "missing_file"],
)
def test_unusable_responses_are_refused(env: Path, response: str) -> None:
    result = apply_edit(env, response)
    assert not result.ok and result.error


def test_truncated_hunk_counts_never_apply_in_part(env: Path) -> None:
    # header claims one added line; the body has two: plain `git apply` would drop the second
    diff = LR_DIFF.replace("@@ -4,4 +4,5 @@", "@@ -4,4 +4,4 @@").replace(
        "+    lr_min = 0.1 * lr\n", "+    lr_min = 0.1 * lr\n+    lr_max = lr\n"
    )
    new = _new(env, diff)
    assert "lr_min = 0.1 * lr\n    lr_max = lr\n" in new


def test_diff_texts_round_trips_through_apply_edit(env: Path) -> None:
    old = {"train.py": TRAIN, "util.py": "def helper():\n    return 1\n"}
    (env / "crlf.py").write_bytes(b"a = 1\r\nb = 2\r\n")
    (env / "nonl.py").write_text("x = 1")
    old.update({"crlf.py": "a = 1\r\nb = 2\r\n", "nonl.py": "x = 1"})
    new = {
        "train.py": LR_RESULT.replace("import torch\n", "import math\nimport torch\n"),
        "crlf.py": "a = 1\r\nb = 3\r\nc = 4\r\n",
        "nonl.py": "x = 2\ny = 3",
        "added.py": "Z = 0\n",
    }  # util.py deleted
    result = apply_edit(env, diff_texts(old, new))
    assert result.ok, result.error
    write_changes(env, result.changes)
    assert {p: (env / p).read_bytes().decode() for p in new} == new
    assert not (env / "util.py").exists()
    assert diff_texts(new, new) == ""


def test_diff_trees_reports_a_job_copy(tmp_path: Path, env: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "train.py").write_text(LR_RESULT)
    (job / "util.py").write_text("def helper():\n    return 1\n")
    diff = diff_trees(env, job, ["train.py", "util.py"])
    assert diff.startswith("--- a/train.py\n+++ b/train.py\n") and "+    lr_min = 0.1 * lr\n" in diff
    assert "util.py" not in diff


def test_write_changes_refuses_stale_files(env: Path) -> None:
    result = apply_edit(env, LR_DIFF)
    (env / "train.py").write_text(TRAIN + "# edited meanwhile\n")
    with pytest.raises(StaleChangeError):
        write_changes(env, result.changes)
    assert (env / "train.py").read_text().endswith("# edited meanwhile\n")
