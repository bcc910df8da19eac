"""The SQLite store: real database files, real subprocesses (a SIGKILL, concurrent connections)."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError

from idealab.metrics import MetricValue
from idealab.status import Status
from idealab.store import DB_NAME, JobEnd, RunRecord, Store, StoreError
from idealab.store.models import Base
from idealab.store.schema import HEAD_REVISION, MIGRATIONS_DIR

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "work", busy_timeout_s=2.0) as opened:
        yield opened


@pytest.fixture
def run(store: Store) -> RunRecord:
    return store.create_run("toy", "envs/toy", "tiny", {"seed": 1}, {"metric": {"name": "loss"}})


def _sqlite(store: Store) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(store.path, isolation_level=None))


def test_migrations_create_the_schema_and_record_a_version(store: Store) -> None:
    assert store.schema_version() == HEAD_REVISION
    with _sqlite(store) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "ideas", "code_changes", "jobs", "metric_values", "llm_calls", "alembic_version"} <= names


def test_the_head_revision_a_read_only_open_accepts_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


def _as_schema_0001(store: Store, run: RunRecord) -> str:
    """A database as idealab wrote it at schema 0001, with one job running; its job key."""
    idea = store.add_idea(run.id, 0, 0, "initial", "idea", "test", {})
    job = store.add_job(idea.id, "i1-a1", "python train.py", "ws", "logs/stdout.log", "logs/stderr.log")
    store.job_started(job.job_key, 1.0, (0, 1), 4242)
    with _sqlite(store) as db:
        db.execute("ALTER TABLE jobs DROP COLUMN handle")
        db.execute("ALTER TABLE jobs DROP COLUMN backend")
        db.execute("DROP INDEX ix_llm_calls_listing")  # (0003)
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    return job.job_key


def test_a_0001_database_is_read_as_it_is_without_handles(store: Store, run: RunRecord) -> None:
    key = _as_schema_0001(store, run)
    store.close()
    with Store.open_readonly(store.path.parent) as readonly:
        (job,) = readonly.jobs()
        assert (job.job_key, job.pid, job.handle, job.backend) == (key, 4242, None, None)
        assert readonly.schema_version() == "0001"  # nothing migrated


def test_migrating_0001_gives_running_local_jobs_their_handle(store: Store, run: RunRecord) -> None:
    _as_schema_0001(store, run)
    store.close()
    with Store.open(store.path.parent) as migrated:
        (job,) = migrated.jobs()
        assert migrated.schema_version() == HEAD_REVISION
        assert (job.handle, job.backend) == ("local:4242:0,1", "local")


def test_a_0002_database_is_read_as_it_is_and_migrating_adds_the_covering_index(store: Store, run: RunRecord) -> None:
    store.add_llm_call(run.id, "ideator", "anthropic", "claude", "[]", "ideas", 1000, 200, 0.25, 3.0)
    store.close()
    with _sqlite(store) as db:
        db.execute("DROP INDEX ix_llm_calls_listing")
        db.execute("UPDATE alembic_version SET version_num = '0002'")
    with Store.open_readonly(store.path.parent) as readonly:
        assert readonly.schema_version() == "0002" and readonly.total_cost(run.id) == 0.25  # nothing migrated
        assert [c.model for c in readonly.llm_call_summaries(run.id)] == ["claude"]
    with Store.open(store.path.parent) as migrated:
        assert migrated.schema_version() == HEAD_REVISION
    with _sqlite(store) as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ix_llm_calls_listing'").fetchone() == (1,)


def test_the_llm_call_listings_read_the_covering_index_not_the_prompts(store: Store, run: RunRecord) -> None:
    from idealab.store.reader import RunReader

    idea = store.add_idea(run.id, 0, 0, "initial", "idea", "test", {})
    for n in range(3):
        store.add_llm_call(run.id, "implementer", "openai", "gpt", "p" * 10_000, "a" * 10_000, 9, 1, 0.5, 1.0,
                           idea_id=idea.id, extra={"n": n})  # fmt: skip
    statements: list[str] = []
    with RunReader.open(store.path.parent) as reader:
        reader._conn.set_trace_callback(statements.append)  # each statement as run, its values bound
        assert reader.total_cost(run.id) == 1.5
        assert len(reader.llm_call_summaries(run.id)) == len(reader.llm_call_summaries(run.id, role="implementer")) == 3
        reader._conn.set_trace_callback(None)
        listings = [s for s in statements if "llm_calls" in s]
        assert len(listings) == 3
        for statement in listings:
            plan = " ".join(str(row[-1]) for row in reader._conn.execute("EXPLAIN QUERY PLAN " + statement))
            assert "COVERING INDEX ix_llm_calls_listing" in plan, (statement, plan)


def test_migrations_match_the_models(store: Store) -> None:
    engine = create_engine(f"sqlite:///{store.path}")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_wal_mode_and_foreign_keys_are_on(store: Store) -> None:
    with _sqlite(store) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(IntegrityError):
        store.add_idea(run_id=999, epoch=0, idx=0, kind="initial", text="t", ideator="x", payload={})


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with Store.open(tmp_path) as first:
        run = first.create_run("toy", "envs/toy", None, {"seed": 3}, {"a": [1, 2]})
        first.add_idea(run.id, 0, 0, "initial", "wider MLP", "llm", {"knobs": {"width": 4}})
        first.set_baseline(run.id, 3.3, Status.OK, None)
    with Store.open(tmp_path) as second:
        again = second.get_run()
        assert again is not None and again.config == {"seed": 3} and again.manifest == {"a": [1, 2]}
        assert (again.baseline_metric, again.baseline_status) == (3.3, Status.OK)
        [idea] = second.ideas(run.id)
        assert idea.text == "wider MLP" and idea.payload == {"knobs": {"width": 4}}
        assert idea.status is Status.PROPOSED
        with pytest.raises(StoreError, match="one run"):
            second.create_run("toy", "envs/toy", None, {}, {})


def test_add_idea_is_idempotent_on_run_epoch_idx(store: Store, run: RunRecord) -> None:
    first = store.add_idea(run.id, 2, 5, "explore", "original", "llm", {})
    again = store.add_idea(run.id, 2, 5, "explore", "a different text", "llm", {"x": 1})
    assert again == first
    store.add_idea(run.id, 2, 6, "explore", "next", "llm", {})
    store.add_idea(run.id, -1, 0, "baseline", "baseline", "none", {})
    assert [(i.epoch, i.idx) for i in store.ideas(run.id)] == [(-1, 0), (2, 5), (2, 6)]
    assert [i.idx for i in store.ideas(run.id, epoch=2, statuses=["proposed"])] == [5, 6]


def test_update_idea_changes_only_the_given_fields(store: Store, run: RunRecord) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
    store.update_idea(idea.id, reason="patch failed", applied_diff="--- a\n+++ b\n")
    store.update_idea(idea.id, status=Status.READY, started_at=10.0)
    got = store.get_idea(idea.id)
    assert (got.status, got.reason, got.applied_diff, got.started_at) == (
        Status.READY, "patch failed", "--- a\n+++ b\n", 10.0,
    )  # fmt: skip
    assert store.update_idea(idea.id, reason=None).reason is None
    with pytest.raises(ValueError):
        store.update_idea(idea.id, status="no-such-status")


def test_finish_idea_writes_status_metric_job_end_and_values_together(store: Store, run: RunRecord) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
    job = store.add_job(idea.id, "e0-i0-a1", "python train.py", "ws", "ws/out.log", "ws/err.log")
    store.job_started("e0-i0-a1", 100.0, (0, 1), 4242)
    assert store.jobs(statuses=[Status.RUNNING])[0].gpu_ids == (0, 1)
    values = [MetricValue("val_loss", 3.4, 10), MetricValue("val_loss", 3.25, 20)]
    store.finish_idea(idea.id, Status.OK, 3.25, None, 200.0, job.job_key, values, JobEnd(199.0, 0, False, "ok"))
    got = store.get_idea(idea.id)
    assert (got.status, got.metric, got.finished_at, got.attempts) == (Status.OK, 3.25, 200.0, 1)
    [ended] = store.jobs(idea.id)
    assert (ended.status, ended.exit_code, ended.finished_at, ended.pid) == (Status.OK, 0, 199.0, 4242)
    assert store.metric_values("e0-i0-a1") == values
    assert store.status_counts(run.id) == {"ok": 1}


def test_finish_idea_without_job_end_still_ends_the_job(store: Store, run: RunRecord) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
    store.add_job(idea.id, "e0-i0-a1", "true", "ws", "o", "e")
    store.job_started("e0-i0-a1", 1.0, (), None)
    store.finish_idea(idea.id, Status.INVALID, None, "no metric", 8.0, "e0-i0-a1", [])
    [job] = store.jobs(idea.id)
    assert (job.status, job.finished_at, job.exit_code, job.gpu_ids) == ("invalid", 8.0, None, ())
    store.job_finished("e0-i0-a1", 9.0, None, False, "abandoned", "orchestrator restarted")
    assert store.jobs(statuses=["abandoned"])[0].error == "orchestrator restarted"


def test_finish_idea_that_fails_midway_writes_nothing(store: Store, run: RunRecord) -> None:
    mine = store.add_idea(run.id, 0, 0, "initial", "mine", "llm", {})
    other = store.add_idea(run.id, 0, 1, "initial", "other", "llm", {})
    store.update_idea(mine.id, status=Status.RUNNING)
    store.add_job(other.id, "e0-i1-a1", "true", "ws", "o", "e")
    with pytest.raises(ValueError, match="belongs to idea"):
        store.finish_idea(mine.id, Status.OK, 1.0, None, 5.0, "e0-i1-a1", [MetricValue("loss", 1.0)])
    got = store.get_idea(mine.id)
    assert (got.status, got.metric, got.finished_at) == (Status.RUNNING, None, None)
    assert store.metric_values("e0-i1-a1") == []
    with pytest.raises(ValueError, match="terminal"):
        store.finish_idea(mine.id, Status.RUNNING, None, None, 5.0)


def test_nan_and_inf_metric_values_round_trip(store: Store, run: RunRecord) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
    store.add_job(idea.id, "k", "true", "ws", "o", "e")
    store.add_metric_values("k", [MetricValue(n, v) for n, v in [("a", math.nan), ("b", math.inf), ("c", -math.inf)]])
    store.add_metric_values("k", [MetricValue("d", 5e-324, 7, "regex")])
    got = store.metric_values("k")
    assert math.isnan(got[0].value)
    assert [v.value for v in got[1:]] == [math.inf, -math.inf, 5e-324]
    assert (got[3].step, got[3].source) == (7, "regex")


def test_add_job_counts_attempts_and_rejects_a_reused_key(store: Store, run: RunRecord) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
    store.add_job(idea.id, "e0-i0-a1", "true", "ws", "o", "e")
    store.job_finished("e0-i0-a1", 9.0, None, True, Status.TIMEOUT, "time limit")
    store.add_job(idea.id, "e0-i0-a2", "true", "ws", "o", "e")
    with pytest.raises(ValueError, match="already used"):
        store.add_job(idea.id, "e0-i0-a2", "true", "ws", "o", "e")
    assert store.get_idea(idea.id).attempts == 2
    first, second = store.jobs(idea.id)
    assert (first.status, first.timed_out, first.error) == (Status.TIMEOUT, True, "time limit")
    assert second.status == "ready"


def test_code_changes_and_llm_calls(store: Store, run: RunRecord) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
    store.add_code_change(idea.id, 1, 0, "diff", "bad diff", "rejected", "hunk 1 failed")
    store.add_code_change(idea.id, 1, 1, "search_replace", "good", "applied", None)
    assert [(c.sample, c.outcome, c.error) for c in store.code_changes(idea.id)] == [
        (0, "rejected", "hunk 1 failed"), (1, "applied", None),
    ]  # fmt: skip
    store.add_llm_call(run.id, "ideator", "anthropic", "claude", "[]", "ideas", 1000, 200, 0.25, 3.0)
    store.add_llm_call(run.id, "implementer", "local", "unpriced", "[]", "diff", 50, 5, None, 1.0,
                       idea_id=idea.id, cached_tokens=10, extra={"stop": "end"})  # fmt: skip
    calls = store.llm_calls(run.id)
    assert [c.role for c in calls] == ["ideator", "implementer"]
    assert (calls[1].idea_id, calls[1].cached_tokens, calls[1].extra) == (idea.id, 10, {"stop": "end"})
    assert store.total_cost(run.id) == 0.25


def test_listing_reads_summaries_payloads_and_compute_totals(store: Store, run: RunRecord) -> None:
    first = store.add_idea(run.id, 0, 0, "initial", "a", "mutate", {"knobs": {"X": 1}})
    second = store.add_idea(run.id, 0, 1, "initial", "b", "mutate", {"knobs": {"X": 2}})
    store.add_job(first.id, "j1", "c", "w", "o", "e")
    store.job_started("j1", 100.0, (0, 1), 1)
    store.finish_idea(first.id, Status.OK, 1.5, None, 110.0, job_key="j1", job_end=JobEnd(110.0, 0, False, "ok"))
    store.add_job(second.id, "j2", "c", "w", "o", "e")
    store.job_started("j2", 100.0, (), 2)
    store.job_finished("j2", 105.0, 1, False, "failed")
    store.add_job(second.id, "j3", "c", "w", "o", "e")  # never started: counts nothing
    summaries = store.idea_summaries(run.id)
    assert [(i.id, i.text, i.status, i.metric, i.attempts) for i in summaries] == [
        (first.id, "a", "ok", 1.5, 1),
        (second.id, "b", "proposed", None, 2),
    ]
    assert store.idea_payloads(run.id) == [{"knobs": {"X": 1}}, {"knobs": {"X": 2}}]
    assert store.compute_seconds() == (15.0, 20.0)  # 10 s on two GPUs, 5 s on none


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    sqlite3.connect(tmp_path / DB_NAME, isolation_level=None).execute("UPDATE alembic_version SET version_num='9999'")
    with pytest.raises(StoreError, match="newer idealab"):
        Store.open(tmp_path)


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from idealab.metrics import MetricValue
from idealab.store import JobEnd, Store

store = Store.open(Path(sys.argv[1]))
run = store.create_run("toy", "envs/toy", None, {}, {})
idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
store.add_job(idea.id, "e0-i0-a1", "true", "ws", "o", "e")
end = JobEnd(5.0, 0, False, "ok")
store.finish_idea(idea.id, "ok", 3.25, None, 5.0, "e0-i0-a1", [MetricValue("loss", 3.25)], end)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_committed_write_survives_sigkill(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with Store.open(tmp_path) as store:
        run = store.get_run()
        assert run is not None
        [idea] = store.ideas(run.id)
        assert (idea.status, idea.metric) == (Status.OK, 3.25)
        assert store.jobs()[0].exit_code == 0
        assert store.metric_values("e0-i0-a1") == [MetricValue("loss", 3.25)]


# Holds a transaction open in another process until told to commit: EXCLUSIVE with an uncommitted
# change (blocks readers unless WAL), or DEFERRED with a read (blocks writers' commits unless WAL).
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN " + sys.argv[2])
if sys.argv[2] == "EXCLUSIVE":
    conn.execute("UPDATE ideas SET text = 'changed'")
else:
    conn.execute("SELECT count(*) FROM ideas").fetchall()
print("holding", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


Holder = Callable[[str], "subprocess.Popen[str]"]


@pytest.fixture
def holder(store: Store) -> Iterator[Holder]:
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> subprocess.Popen[str]:
        args = [sys.executable, "-c", _HOLDER, str(store.path), mode]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "holding\n"
        return proc

    yield start
    for proc in procs:
        with proc:  # closes its pipes and waits
            proc.kill()


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(timeout=10) == 0


def test_reads_do_not_wait_for_an_open_write(store: Store, run: RunRecord, holder: Holder) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "original", "llm", {})
    writer = holder("EXCLUSIVE")
    assert store.get_idea(idea.id).text == "original"  # the committed state, at once
    _release(writer)
    assert store.get_idea(idea.id).text == "changed"


def test_writes_do_not_wait_for_an_open_read(store: Store, run: RunRecord, holder: Holder) -> None:
    idea = store.add_idea(run.id, 0, 0, "initial", "t", "llm", {})
    reader = holder("DEFERRED")
    store.finish_idea(idea.id, Status.FAILED, None, "exit code 1", 3.0)
    assert store.get_idea(idea.id).status is Status.FAILED
    _release(reader)


def test_the_sqlalchemy_free_reader_reads_what_the_store_wrote(store: Store, run: RunRecord) -> None:
    """`RunReader` (sqlite3 only, for status/report/serve) against the ORM's own decoding of the same rows."""
    from idealab.store.reader import RunReader

    ok = store.add_idea(run.id, 0, 0, "initial", "wider", "llm", {"parents": [], "seed": 3})
    store.update_idea(ok.id, applied_diff="--- a\n+++ b\n", final_diff="--- a/x\n+++ b/x\n")
    store.add_job(ok.id, "i1-a1", "python train.py", "ws", "logs/out", "logs/err")
    store.job_started("i1-a1", 10.0, (0, 1), 42)
    values = [MetricValue("loss", 1.5, 1, "stdout"), MetricValue("loss", math.nan, 2, "stdout")]
    store.finish_idea(ok.id, Status.OK, 1.25, None, 70.0, job_key="i1-a1", values=values,
                      job_end=JobEnd(70.0, 0, False, Status.OK.value))  # fmt: skip
    store.set_payload_entry(ok.id, "audit", {"verdict": "legit", "model": "m"})
    late = store.add_idea(run.id, -1, 0, "baseline", "baseline", "none", {})
    store.add_job(late.id, "i2-a1", "python train.py", "ws2", "o", "e")
    store.job_started("i2-a1", 5.0, (), 43)
    store.job_finished("i2-a1", 9.0, None, True, Status.TIMEOUT.value, "killed at the limit")
    store.add_llm_call(run.id, "ideator", "anthropic", "claude", "[]", "ideas", 1000, 200, 0.25, 3.0,
                       extra={"ideas": 2, "format": "structured"})  # fmt: skip
    store.add_llm_call(run.id, "implementer", "local", "unpriced", "[]", "diff", 50, 5, None, 1.0,
                       idea_id=ok.id, error="timeout")  # fmt: skip
    with RunReader.open(store.path.parent) as reader:
        assert reader.get_run() == store.get_run() == run
        assert reader.schema_version() == store.schema_version() == HEAD_REVISION
        assert reader.ideas(run.id) == store.ideas(run.id) == [store.get_idea(late.id), store.get_idea(ok.id)]
        assert reader.ideas(run.id, epoch=0, statuses=["ok"]) == [store.get_idea(ok.id)]
        assert reader.ideas(run.id, diffs=False)[1].applied_diff is None
        assert reader.idea_summaries(run.id) == store.idea_summaries(run.id)
        assert reader.idea_audits(run.id) == {ok.id: {"verdict": "legit", "model": "m"}}
        assert reader.idea_diffs([ok.id, late.id]) == {
            ok.id: ("--- a\n+++ b\n", "--- a/x\n+++ b/x\n"),
            late.id: (None, None),
        }
        assert reader.changed_ideas(run.id) == {ok.id}
        jobs = reader.job_summaries()
        assert jobs == store.job_summaries()
        assert [(j.gpu_ids, j.timed_out, j.error) for j in jobs] == [
            ((0, 1), False, None),
            ((), True, "killed at the limit"),
        ]
        read = reader.metric_values("i1-a1")
        assert read[0] == values[0] and math.isnan(read[1].value) and read[1].step == 2
        with pytest.raises(KeyError):
            reader.metric_values("no-such-job")
        calls = reader.llm_call_summaries(run.id)
        assert calls == store.llm_call_summaries(run.id)
        assert [(c.role, c.cost_usd, c.extra, c.error) for c in calls] == [
            ("ideator", 0.25, {"ideas": 2, "format": "structured"}, None),
            ("implementer", None, None, "timeout"),
        ]
        assert reader.llm_call_summaries(run.id, role="ideator") == calls[:1]
        assert reader.total_cost(run.id) == 0.25
        assert reader.compute_seconds() == (60.0 + 4.0, 120.0) and reader.compute_seconds(-1) == (4.0, 0.0)
        with pytest.raises(StoreError, match="cannot be written"), reader._guard() as conn:
            conn.execute("DELETE FROM runs")  # read-only: a write is refused
