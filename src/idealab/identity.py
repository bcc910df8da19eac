"""What a run's environment was: its resolved path, a hash of its files, its git state, its manifest.

A new run stores its identity in `runs.config["environment"]` (the manifest as used, preset applied, is
already in `runs.manifest`). A resume compares both with what it finds now and is refused, each difference
named: an environment resolved to another directory (a relative `--env` from another working directory),
a changed, added or removed file, an edited manifest. The git commit and dirty state are recorded so that
a result can be traced to a commit; the file hashes decide, since a commit elsewhere in the repository
changes nothing that runs.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idealab.executor.sandbox import hash_files, walk_environment
from idealab.store import RunRecord

ENVIRONMENT_KEY = "environment"  # the key of the identity in runs.config
_LISTED = 8  # file names listed per kind of difference


def environment_identity(root: Path, exclude: Path | None = None) -> dict[str, Any]:
    """The identity of the environment at `root` (the files a copy takes; `exclude`, e.g. a workdir, skipped)."""
    links: dict[str, str] = {}
    regular: list[str] = []
    for rel, path in walk_environment(root, exclude):
        if path.is_symlink():
            links[rel] = f"symlink:{path.readlink()}"
        elif path.is_file():
            regular.append(rel)
    files = {**hash_files(root, regular), **links}
    listing = "".join(f"{rel}\0{digest}\n" for rel, digest in sorted(files.items()))
    return {
        "root": str(root),
        "content_sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "files": files,
        "git": git_state(root),
    }


def git_state(root: Path) -> dict[str, Any] | None:
    """The commit and dirty state of the git repository holding `root` (None outside one, or without git)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None:
        return None
    changes = git("status", "--porcelain", "--untracked-files=normal", "--", ".")  # under root only
    return {"repository": top, "commit": git("rev-parse", "--verify", "-q", "HEAD"), "dirty": bool(changes)}


def differences(run: RunRecord, environment: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    """How the environment and manifest found now differ from those `run` started with (empty: the same)."""
    found = []
    if environment["root"] != run.env_root:
        found.append(f"the environment is {environment['root']}; the run's is {run.env_root}")
    stored = run.config.get(ENVIRONMENT_KEY)
    if isinstance(stored, Mapping) and stored.get("content_sha256") != environment["content_sha256"]:
        old, new = dict(stored.get("files", {})), dict(environment["files"])
        for what, names in (
            ("changed", [rel for rel in sorted(old.keys() & new.keys()) if old[rel] != new[rel]]),
            ("added", sorted(new.keys() - old.keys())),
            ("removed", sorted(old.keys() - new.keys())),
        ):
            if names:
                more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
                found.append(f"files {what} since the run started: {', '.join(names[:_LISTED])}{more}")
    for path, then, now in _dict_differences(run.manifest, manifest):
        if path != "root":  # named above
            found.append(f"manifest {path}: {then!r} when the run started, now {now!r}")
    return found


def _dict_differences(then: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for each value that differs; keys the old snapshot lacks (older idealab) are
    not compared."""
    found = []
    for key in sorted(then):
        old, new = then[key], now.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found.extend(_dict_differences(old, new, f"{prefix}{key}."))
        elif old != new:
            found.append((f"{prefix}{key}", old, new))
    return found
