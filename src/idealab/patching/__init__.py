"""Robust application of model-written code changes (unified diffs and SEARCH/REPLACE blocks).

    result = apply_edit(env_root, llm_response)   # computes new texts, touches nothing
    if result.ok:
        write_changes(job_copy, result.changes)
    else:
        feed result.error back to the model

See docs/BENCHMARKS.md ("Diff application") for how it compares with `patch` and `git apply`.
"""

from idealab.patching.apply import (
    ApplyResult,
    FileChange,
    PathError,
    StaleChangeError,
    apply_edit,
    write_changes,
)
from idealab.patching.render import diff_texts, diff_trees

__all__ = [
    "ApplyResult",
    "FileChange",
    "PathError",
    "StaleChangeError",
    "apply_edit",
    "diff_texts",
    "diff_trees",
    "write_changes",
]
