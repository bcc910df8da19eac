"""Faults of the machine are errors with a message and a clean stop: a locked database, a full disk,
an empty or corrupted database. Real SQLite, real filesystems (a small tmpfs), real processes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from idealab.errors import RunFault
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.ideators.mutate import MutateIdeator
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.manifest import load_manifest
from idealab.search.loop import Search, SearchConfig, SearchEvent
from idealab.status import Status
from idealab.store import DB_NAME, JobEnd, Store, StoreBusy, StoreError
from mounts import remount, tmpfs

QUAD = Path(__file__).parent / "envs" / "quad"
SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def idealab(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idealab", *args], capture_output=True, text=True, timeout=timeout, env=env or ENV
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return " ".join(done.stderr.split())


# ------------------------------------------------------------------------------------ a locked database

# Holds the database's write lock (BEGIN EXCLUSIVE) in another process until told to commit.
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("holding", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


class Holder:
    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "holding\n"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
            assert self.proc.wait(timeout=10) == 0

    def kill(self) -> None:
        with self.proc:
            self.proc.kill()


class OnRetry(logging.Handler):
    """Calls `action` when the store logs that it is trying a locked write again."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.action = action

    def emit(self, record: logging.LogRecord) -> None:
        if "trying again" in record.getMessage():
            self.action()


@pytest.fixture
def on_retry() -> Iterator[Callable[[Callable[[], None]], None]]:
    logger = logging.getLogger("idealab.store.store")
    handlers: list[logging.Handler] = []

    def install(action: Callable[[], None]) -> None:
        handlers.append(OnRetry(action))
        logger.addHandler(handlers[-1])

    yield install
    for handler in handlers:
        logger.removeHandler(handler)


def baseline_with_job(store: Store) -> tuple[int, int]:
    run = store.create_run("quad", str(QUAD), None, {}, {"metric": {"name": "loss", "goal": "minimize"}})
    idea = store.add_idea(run.id, -1, 0, "baseline", "Baseline", "baseline", {})
    store.add_job(idea.id, "i1-a1", "python train.py", "ws", "o", "e")
    store.job_started("i1-a1", 1.0, (), None)
    return run.id, idea.id


def finish_baseline(store: Store, idea_id: int) -> None:
    store.finish_idea(
        idea_id, Status.OK, 2.04, None, 3.0, "i1-a1", [], JobEnd(2.5, 0, False, "ok"), baseline=True
    )


def test_a_write_locked_past_its_attempts_raises_store_busy_and_changes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path, busy_timeout_s=0.2, write_attempts=2) as store:
        run_id, idea_id = baseline_with_job(store)
        holder = Holder(store.path)
        try:
            with pytest.raises(StoreBusy, match="stayed locked by another process for 0.4 s"):
                finish_baseline(store, idea_id)
        finally:
            holder.kill()
        idea, run, [job] = store.get_idea(idea_id), store.get_run(), store.jobs()
        assert run is not None and (run.baseline_metric, run.baseline_status) == (None, None)
        assert (idea.status, idea.metric, job.status) == (Status.PROPOSED, None, "running")


def test_a_locked_write_is_retried_as_a_whole(tmp_path: Path, on_retry) -> None:
    with Store.open(tmp_path, busy_timeout_s=0.2, write_attempts=3) as store:
        run_id, idea_id = baseline_with_job(store)
        holder = Holder(store.path)
        on_retry(holder.release)  # the holder lets go after the first attempt timed out
        try:
            finish_baseline(store, idea_id)
        finally:
            holder.kill()
        idea, run, [job] = store.get_idea(idea_id), store.get_run(), store.jobs()
        assert run is not None and (run.baseline_metric, run.baseline_status) == (2.04, "ok")
        assert (idea.status, idea.metric, job.status, job.exit_code) == (Status.OK, 2.04, "ok", 0)


def make_search(workdir: Path, env: Path = QUAD, **store_options: float) -> tuple[Search, Store, LocalBackend]:
    manifest = load_manifest(env)
    store = Store.open(workdir, **store_options)  # type: ignore[arg-type]
    run = store.get_run() or store.create_run(
        "quad", str(env), None, {}, {"metric": {"name": "loss", "goal": "minimize"}}
    )
    backend = LocalBackend(SlotPool.cpu_only(1))
    config = SearchConfig(epochs=1, ideas_per_epoch=2, seed=0)
    search = Search(manifest, store, run.id, backend, MutateIdeator(), ReadyDiffImplementer(), config, workdir)
    return search, store, backend


async def drive(search: Search, backend: LocalBackend) -> None:
    try:
        await search.run()
    finally:
        await backend.close()


def hold_from_first_start(search: Search, holders: list[Holder]) -> None:
    def on_event(event: SearchEvent) -> None:
        if event.kind == "started" and not holders:
            holders.append(Holder(search.store.path))  # taken while the baseline's job runs

    search.on_event = on_event


def test_a_database_locked_at_a_jobs_end_stops_the_run_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    search, store, backend = make_search(tmp_path, busy_timeout_s=0.3, write_attempts=2)
    holders: list[Holder] = []
    hold_from_first_start(search, holders)
    try:
        with pytest.raises(StoreBusy, match="stayed locked"):
            asyncio.run(drive(search, backend))
    finally:
        for holder in holders:
            holder.kill()
    assert holders and search.internal_errors == []
    run = store.get_run()
    assert run is not None and (run.baseline_metric, run.baseline_status) == (None, None)  # nothing half-written
    assert not [i for i in store.ideas(run.id) if i.status.terminal]  # no idea blamed for the lock
    store.close()

    search, store, backend = make_search(tmp_path)  # the resume
    asyncio.run(drive(search, backend))
    run = store.get_run()
    assert run is not None and run.baseline_status == "ok" and run.baseline_metric == pytest.approx(2.04)
    assert {i.status for i in store.ideas(run.id)} == {Status.OK}
    # The job that was running when the lock stopped the run is either settled from its supervisor's record
    # or abandoned and run again; either way every idea has exactly one ok job.
    jobs = store.jobs()
    assert {j.status for j in jobs} <= {"ok", "abandoned"}
    ok_per_idea = [j.idea_id for j in jobs if j.status == "ok"]
    assert sorted(ok_per_idea) == sorted({i.id for i in store.ideas(run.id)})
    store.close()


def test_a_database_locked_for_less_than_the_bound_delays_the_run_only(tmp_path: Path, on_retry) -> None:
    search, store, backend = make_search(tmp_path, busy_timeout_s=0.3, write_attempts=3)
    holders: list[Holder] = []
    hold_from_first_start(search, holders)
    on_retry(lambda: [holder.release() for holder in holders])
    try:
        asyncio.run(drive(search, backend))
    finally:
        for holder in holders:
            holder.kill()
    run = store.get_run()
    assert holders and run is not None and run.baseline_metric == pytest.approx(2.04)
    assert {i.status for i in store.ideas(run.id)} == {Status.OK}
    assert {j.status for j in store.jobs()} == {"ok"}
    store.close()


# ------------------------------------------------------------------------- empty or corrupted database


def workdir_with_lost_database(tmp_path: Path, content: bytes) -> tuple[Path, Path]:
    """A workdir whose experiments survive while idealab.db holds `content` (b'' = truncated)."""
    workdir = tmp_path / "w"
    log = workdir / "experiments" / "00001" / "logs" / "i1-a1" / "stdout.log"
    log.parent.mkdir(parents=True)
    log.write_text("@metric {\"name\": \"loss\", \"value\": 2.04}\n")
    (workdir / DB_NAME).write_bytes(content)
    return workdir, log


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", "is empty (0 bytes)"), (b"not a database, just text\n" * 300, "corrupted or not a database")],
    ids=["empty", "garbage"],
)
def test_a_lost_database_is_refused_and_nothing_is_overwritten(tmp_path: Path, content: bytes, says: str) -> None:
    workdir, log = workdir_with_lost_database(tmp_path, content)
    before = log.read_bytes()
    done = idealab("run", "--env", str(QUAD), "--workdir", str(workdir), "--quiet")
    assert done.returncode == 1 and says in one_line_error(done)
    status = idealab("status", "--workdir", str(workdir))
    assert status.returncode == 1 and says in one_line_error(status)
    assert (workdir / DB_NAME).read_bytes() == content and log.read_bytes() == before
    assert sorted(p.name for p in (workdir / "experiments").iterdir()) == ["00001"]


def test_a_damaged_page_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        run = store.create_run("quad", str(QUAD), None, {}, {})
        for idx in range(50):
            store.add_idea(run.id, 0, idx, "initial", "x" * 3000, "mutate", {})
    data = bytearray((tmp_path / DB_NAME).read_bytes())
    data[3 * 4096 : 4 * 4096] = b"\xff" * 4096  # one b-tree page overwritten, the header intact
    (tmp_path / DB_NAME).write_bytes(bytes(data))
    done = idealab("run", "--workdir", str(tmp_path), "--quiet")
    assert done.returncode == 1 and "is corrupted" in one_line_error(done)
    assert (tmp_path / DB_NAME).read_bytes() == bytes(data)


def test_experiments_without_a_database_are_not_overwritten_by_a_new_run(tmp_path: Path) -> None:
    workdir, log = workdir_with_lost_database(tmp_path, b"")
    (workdir / DB_NAME).unlink()
    done = idealab("run", "--env", str(QUAD), "--workdir", str(workdir), "--quiet")
    assert done.returncode == 2 and "will not start a new run over them" in one_line_error(done)
    assert not (workdir / DB_NAME).exists() and log.exists()


# ----------------------------------------------------------------------------------------- disk full


def test_a_full_disk_makes_a_database_write_a_clear_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk, Store.open(disk / "w") as store:
        run = store.create_run("quad", str(QUAD), None, {}, {})
        filler = disk / "filler"
        with filler.open("wb") as out, pytest.raises(OSError, match="No space left"):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        with pytest.raises(StoreError, match="is full"):
            store.add_idea(run.id, 0, 0, "initial", "x" * 200_000, "mutate", {})  # the WAL must grow
        filler.unlink()
        assert store.add_idea(run.id, 0, 0, "initial", "x" * 200_000, "mutate", {}).status is Status.PROPOSED


def test_a_disk_too_full_for_an_experiment_copy_stops_the_search(tmp_path: Path) -> None:
    env = tmp_path / "big"
    shutil.copytree(QUAD, env)
    (env / "data").mkdir()
    for i in range(200):  # 4 MB in small files (copied, never linked, whatever the copy strategy)
        (env / "data" / f"part{i:03d}.bin").write_bytes(os.urandom(20_000))
    with tmpfs(tmp_path / "disk", "3m") as disk:
        search, store, backend = make_search(disk / "w", env)
        with pytest.raises(RunFault, match="cannot copy the environment .*No space left on device"):
            asyncio.run(drive(search, backend))
        run = store.get_run()
        assert run is not None and not [i for i in store.ideas(run.id) if i.status.terminal]
        assert search.internal_errors == []
        store.close()


def filling_env(tmp_path: Path) -> Path:
    """quad whose jobs, when $QUAD_FILL is set, print 3 MB after their metric (filling a small disk)."""
    env = tmp_path / "filling"
    shutil.copytree(QUAD, env)
    manifest = env / "idealab.toml"
    command = """python train.py && if [ -n "$QUAD_FILL" ]; then head -c 3000000 /dev/zero; fi"""
    text = manifest.read_text().replace('command = "python train.py"', f"command = '{command}'")
    manifest.write_text(text.replace("[run]\n", '[run]\nallow_env = ["QUAD_FILL"]\n', 1))  # jobs see listed names only
    return env


@pytest.mark.slow
def test_a_job_filling_the_disk_stops_the_run_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    env = filling_env(tmp_path)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        workdir = disk / "w"
        args = ("run", "--env", str(env), "--epochs", "1", "--ideas-per-epoch", "2", "--slots", "2",
                "--workdir", str(workdir), "--quiet")  # fmt: skip
        done = idealab(*args, env={**ENV, "QUAD_FILL": "1"})
        stopped_at = time.time()
        assert done.returncode == 1 and "full" in one_line_error(done), done.stderr[-2000:]
        with sqlite3.connect(f"file:{workdir / DB_NAME}?mode=ro", uri=True) as db:
            judged = db.execute("SELECT status, reason FROM ideas WHERE status = 'failed'").fetchall()
        assert judged == []  # the disk failed, not an idea

        remount(disk, "size=64m")
        resumed = idealab(*args)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        with sqlite3.connect(workdir / DB_NAME) as db:
            assert db.execute("SELECT DISTINCT status FROM ideas").fetchall() == [("ok",)]
            abandoned = db.execute("SELECT finished_at FROM jobs WHERE status = 'abandoned'").fetchall()
    # a job found dead on resume ended when its logs stopped, not when the resume came: not compute
    assert abandoned and all(finished <= stopped_at for (finished,) in abandoned)
