"""Cheap copies of an environment: large files are shared read-only between a run's experiments.

Every experiment gets its own copy of the environment, but a data file of hundreds of megabytes need not
be copied per experiment. Editable files and small files are copied; every other regular file of at least
`SHARE_MIN_BYTES` is hard-linked from the run's *pool* (`<workdir>/shared-files/`), one read-only (0444)
copy made the first time an experiment needs it.

Why this design:
- Hard links, not symlinks: the copy looks like a plain directory to the job (no path out of it), and a
  link costs nothing. The pool lives in the workdir, so links never cross a filesystem.
- A pool, never links to the environment itself: a hard link shares the inode, and the user's files are
  writable, so a job writing "its" file would change the environment and every later experiment. A pool
  copy is made read-only: a job of an ordinary user that writes to it fails with a permission error.
- A job can still chmod the shared inode and write it (it runs as the same user; as root, permission bits
  do not bind at all, as in many containers). After every job
  `changed` looks at the job's links: a shared file whose mode, size or modification time moved makes the
  experiment `tampered` (its inputs were not the environment's), and the pool copy is replaced from the
  environment before any other experiment links it. Readonly and hidden files are also hashed after every
  job, as always, so for those even a change that restores the modification time is caught.
- A job that deletes its link and writes a new file of that name only changes its own copy, as before.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from idealab.executor.sandbox import walk_environment

SHARE_MIN_BYTES = 1 << 20
POOL_DIR = "shared-files"
_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class SharedFiles:
    """Makes experiment copies of `root` with its large non-editable files linked from a read-only pool."""

    def __init__(
        self,
        root: Path,
        pool: Path,
        editable: Iterable[str],
        exclude: Path | None = None,
        min_bytes: int = SHARE_MIN_BYTES,
        omit: Iterable[str] = (),
    ) -> None:
        self.root = root
        self.omit = frozenset(omit)  # files a copy does not take (hidden files, when scoring has them)
        self.pool = pool
        self.editable = frozenset(editable)
        self.exclude = exclude
        self.min_bytes = min_bytes
        self._lock = threading.Lock()  # copies run in worker threads; the pool is made once

    def copy(self, dest: Path) -> Path:
        """A copy of the environment at `dest` (which must not exist); returns `dest`."""
        dest.mkdir(parents=True)
        directories: list[tuple[Path, Path]] = []
        for rel, src in walk_environment(self.root, self.exclude):
            if rel in self.omit:
                continue
            target = dest / rel
            if src.is_symlink():
                os.symlink(os.readlink(src), target)
            elif src.is_dir():
                target.mkdir()
                directories.append((src, target))
            elif not src.is_file():
                continue  # a socket or fifo: nothing a copy could hold
            elif self._shared(rel, src):
                self._link(rel, src, target)
            else:
                shutil.copy2(src, target)
        for src, target in reversed(directories):  # modes last, so a read-only directory is filled first
            shutil.copystat(src, target)
        return dest

    def changed(self, workspace: Path) -> list[str]:
        """Shared files that a job changed through its links (each repaired in the pool before returning)."""
        found = []
        for rel, src in walk_environment(self.root, self.exclude):
            if not src.is_file() or src.is_symlink() or not self._shared(rel, src):
                continue
            try:
                mine = (workspace / rel).lstat()
            except FileNotFoundError:
                continue  # the job deleted its link: nothing shared was touched
            if not stat.S_ISREG(mine.st_mode) or mine.st_nlink < 2:
                continue  # the job's own file now, not a link to the pool
            if not _same(mine, src.stat()):
                found.append(rel)
                with self._lock:
                    self._pooled(rel, src)
        return found

    def _shared(self, rel: str, src: Path) -> bool:
        return rel not in self.editable and src.stat().st_size >= self.min_bytes

    def _link(self, rel: str, src: Path, target: Path) -> None:
        with self._lock:
            pooled = self._pooled(rel, src)
        try:
            os.link(pooled, target)
        except OSError:  # a filesystem without hard links (or at its link limit): an ordinary copy
            shutil.copy2(src, target)

    def _pooled(self, rel: str, src: Path) -> Path:
        """The pool's read-only copy of `src`, made (or made again, if changed) from the environment."""
        pooled = self.pool / rel
        try:
            if _same(pooled.lstat(), src.stat()):
                return pooled
        except FileNotFoundError:
            pass
        pooled.parent.mkdir(parents=True, exist_ok=True)
        fresh = pooled.with_name(f".{pooled.name}.{os.getpid()}.tmp")
        shutil.copy2(src, fresh)
        fresh.chmod(0o444)
        os.replace(fresh, pooled)  # experiments linked to a changed copy keep theirs; new links get this
        return pooled


def _same(shared: os.stat_result, original: os.stat_result) -> bool:
    """A shared copy still as made: read-only, the original's size and modification time."""
    return (
        stat.S_ISREG(shared.st_mode)
        and not shared.st_mode & _WRITE_BITS
        and shared.st_size == original.st_size
        and shared.st_mtime_ns == original.st_mtime_ns
    )
