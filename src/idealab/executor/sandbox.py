"""A job's surroundings: its own copy of the environment, file hashes, and an allow-listed process environment.

Jobs run LLM-written code, so they never see the orchestrator's credentials: a job's environment holds
only the variables on the allow-list (`idealab.credentials.DEFAULT_ALLOWED` plus the manifest's
`run.allow_env`), and HOME is a private directory of the job's own. The filesystem, process, network and
limit side of the sandbox is `idealab.executor.bwrap`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from string import Template

from idealab.credentials import allowed_environ, is_credential, matches
from idealab.paths import DATA_DIR_VAR, data_dir

COPY_IGNORE = ("__pycache__", ".git", "*.pyc", ".mypy_cache", ".pytest_cache", ".ruff_cache")
MISSING_FILE_HASH = "missing"  # never a sha256 hex digest, so a deleted file always counts as changed

JOB_ID_VAR = "IDEALAB_JOB_ID"
NUM_GPUS_VAR = "IDEALAB_NUM_GPUS"


def copy_environment(src_dir: Path, dest: Path, omit: Iterable[str] = ()) -> Path:
    """Copy an environment directory to `dest` (which must not exist), keeping modes and symlinks; `omit`:
    files (relative paths) the copy does not take, e.g. hidden files that only the scoring step may see."""
    skip = {(src_dir / rel).resolve() for rel in omit}
    patterns = shutil.ignore_patterns(*COPY_IGNORE)

    def ignore(directory: str, names: list[str]) -> set[str]:
        left = set(patterns(directory, names))
        return left | {name for name in names if (Path(directory) / name).resolve() in skip}

    shutil.copytree(src_dir, dest, symlinks=True, ignore=ignore)
    return dest


def ignored(name: str) -> bool:
    """True for what no copy of an environment takes (caches, VCS metadata), as `copy_environment`."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in COPY_IGNORE)


def walk_environment(root: Path, exclude: Path | None = None) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every directory, file and symlink under `root` that a copy takes, parents
    before children, sorted; symlinks are not followed; `exclude` (e.g. a workdir inside it) is skipped."""
    skip = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            path = here / name
            if ignored(name) or (skip is not None and path.resolve() == skip):
                continue
            yield path.relative_to(root).as_posix(), path
            if not path.is_symlink():  # a symlinked directory is taken as the link
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            if not ignored(name):
                path = here / name
                yield path.relative_to(root).as_posix(), path


def hash_files(root: Path, rel_paths: Iterable[str]) -> dict[str, str]:
    """sha256 of each file under `root`; a missing (or non-regular) file hashes to MISSING_FILE_HASH."""
    hashes: dict[str, str] = {}
    for rel in rel_paths:
        path = root / rel
        if not path.is_file():
            hashes[rel] = MISSING_FILE_HASH
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        hashes[rel] = digest.hexdigest()
    return hashes


def scrubbed_environ(base: Mapping[str, str]) -> dict[str, str]:
    """`base` without credentials or provider variables."""
    return {name: value for name, value in base.items() if not is_credential(name)}


def job_environment(
    extra: Mapping[str, str],
    gpu_ids: Sequence[int],
    job_id: str,
    base: Mapping[str, str] | None = None,
    allow: Sequence[str] = (),
    home: str | None = None,
) -> dict[str, str]:
    """The full environment of a job process.

    The allow-listed part of `base` (default os.environ; `allow`: the manifest's extra names), the running
    interpreter's bin directory first on PATH (so `python` in a manifest command is this interpreter), the
    idealab variables, exactly the leased GPU ids
    in CUDA_VISIBLE_DEVICES (empty for a CPU job), then `extra` (the manifest's `run.env`) with `${VAR}`
    substituted from the variables set so far. HOME is `home` (a private directory) or absent.
    Credential-looking names not explicitly allowed are scrubbed again after substitution.
    """
    env = allowed_environ(os.environ if base is None else base, allow)
    if home is not None:
        env["HOME"] = home
    bin_dir = str(Path(sys.executable).parent)  # not resolved: a venv's bin must stay the venv's
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *rest])
    env[DATA_DIR_VAR] = str(data_dir())
    env[JOB_ID_VAR] = job_id
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
    env[NUM_GPUS_VAR] = str(len(gpu_ids))
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in extra.items():
        env[name] = Template(value).safe_substitute(env)
    explicit = {k: v for k, v in env.items() if any(matches(k, p) for p in allow)}
    return {**scrubbed_environ(env), **explicit}
