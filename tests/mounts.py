"""Real filesystems for fault tests: a small tmpfs (disk full) and a read-only copy of a directory.

Mounting needs root (CAP_SYS_ADMIN); where it is not allowed the test is skipped, except that a
non-root user gets a read-only directory from permissions alone (root ignores permission bits).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode})")


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. '2m') mounted at `where` (created), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    _mount("-o", f"remount,{options}", str(where))


@contextmanager
def readonly_copy(src: Path, where: Path) -> Iterator[Path]:
    """A copy of directory `src` at `where/<name>` on a filesystem (or with permissions) that forbids writes."""
    if os.geteuid() != 0:
        dest = where / src.name
        shutil.copytree(src, dest, symlinks=True)
        for path in [dest, *dest.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            yield dest
        finally:
            for path in [dest, *dest.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
        return
    with tmpfs(where, "64m"):
        dest = where / src.name
        shutil.copytree(src, dest, symlinks=True)
        remount(where, "ro")
        yield dest
