"""Copies are cheap: large files are linked read-only from one pool per run, and writing through a link is
caught (the experiment is `tampered`) and repaired before anyone else links the file."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from idealab.executor.shared import SharedFiles

QUAD = Path(__file__).parent / "envs" / "quad"
MB = 1 << 20

READS_DATA = """
with open("data.bin", "rb") as handle:
    assert len(handle.read()) == DATA_BYTES, "the data file is not whole"
"""

WRITES_DATA = """
if X != 0.5:  # every idea (the baseline keeps X = 0.5) writes through its link
    os.chmod("data.bin", 0o644)
    with open("data.bin", "ab") as handle:
        handle.write(b"changed by a job")
"""


def env_with_data(tmp_path: Path, size: int, extra: str) -> Path:
    env = tmp_path / "env"
    shutil.copytree(QUAD, env)
    with open(env / "data.bin", "wb") as handle:
        for _ in range(size // MB):
            handle.write(os.urandom(MB))
    train = env / "train.py"
    text = train.read_text().replace("time.sleep(", f"DATA_BYTES = {size}\n{READS_DATA}{extra}\ntime.sleep(", 1)
    train.write_text(text)
    return env


def run(env: Path, workdir: Path, ideas: int, sandbox: str = "auto") -> None:
    done = subprocess.run(
        [sys.executable, "-m", "idealab", "run", "--env", str(env), "--epochs", "1", "--ideas-per-epoch",
         str(ideas), "--slots", "1", "--workdir", str(workdir), "--quiet", "--sandbox", sandbox,
         "--baseline-runs", "1", "--confirm-top", "0"],  # one baseline, no confirmation: a job per idea
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def disk_use(root: Path) -> int:
    """Bytes allocated under root, each inode counted once (as `du` does)."""
    seen: dict[tuple[int, int], int] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def statuses(workdir: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(workdir / "idealab.db") as conn:
        return conn.execute("SELECT epoch, status, reason FROM ideas ORDER BY id").fetchall()


def test_five_experiments_on_a_50_mb_data_file_use_its_size_once(tmp_path: Path) -> None:
    env = env_with_data(tmp_path, 50 * MB, "")
    workdir = tmp_path / "run"
    run(env, workdir, ideas=4)
    rows = statuses(workdir)
    # the baseline and 4 ideas, and a re-run of any result the suspect rule flagged (epoch -2)
    assert len([r for r in rows if r[0] != -2]) == 5 and {status for _, status, _ in rows} == {"ok"}
    assert disk_use(workdir) < 1.2 * 50 * MB  # one copy in the pool; five experiments would make 5x
    copies = sorted(workdir.glob("experiments/*/code/data.bin"))
    assert len(copies) == len(rows)
    assert len({p.stat().st_ino for p in copies}) == 1 and copies[0].stat().st_mode & 0o777 == 0o444
    assert (env / "data.bin").stat().st_nlink == 1  # the environment's own file is never linked
    assert (copies[0].parent / "train.py").stat().st_nlink == 1  # editable files are real copies


def test_a_job_writing_through_its_link_is_tampered_and_the_pool_is_repaired(tmp_path: Path) -> None:
    env = env_with_data(tmp_path, 2 * MB, WRITES_DATA)
    original = hashlib.sha256((env / "data.bin").read_bytes()).hexdigest()
    workdir = tmp_path / "run"
    # without the sandbox (in it, the link is bound read-only and the write fails: tests/test_sandbox.py)
    run(env, workdir, ideas=2, sandbox="off")
    rows = statuses(workdir)
    assert rows[0][:2] == (-1, "ok")  # the baseline does not write
    for _, status, reason in rows[1:]:
        assert status == "tampered" and "data.bin" in (reason or "")  # each idea saw a whole file first
    pooled = workdir / "shared-files" / "data.bin"
    assert hashlib.sha256(pooled.read_bytes()).hexdigest() == original and pooled.stat().st_mode & 0o777 == 0o444
    assert hashlib.sha256((env / "data.bin").read_bytes()).hexdigest() == original


def test_a_plain_write_to_a_shared_file_fails_or_is_caught(tmp_path: Path) -> None:
    """Read-only stops a job of an ordinary user; root writes anyway, and then the check catches it."""
    root = tmp_path / "env"
    root.mkdir()
    (root / "big.bin").write_bytes(b"x" * 4096)
    (root / "small.txt").write_text("s")
    shared = SharedFiles(root, tmp_path / "pool", editable=["small.txt"], min_bytes=1024)
    copy = shared.copy(tmp_path / "copy")
    assert (copy / "small.txt").stat().st_nlink == 1 and (copy / "big.bin").stat().st_nlink == 2
    write = "open('big.bin', 'ab').write(b'y')"
    done = subprocess.run([sys.executable, "-c", write], cwd=copy, capture_output=True, text=True)
    if os.geteuid() == 0:  # permission bits do not bind root
        assert done.returncode == 0 and shared.changed(copy) == ["big.bin"]
    else:
        assert done.returncode != 0 and "PermissionError" in done.stderr and shared.changed(copy) == []
    assert (root / "big.bin").read_bytes() == b"x" * 4096
    assert (shared.copy(tmp_path / "next") / "big.bin").read_bytes() == b"x" * 4096
