"""The per-job supervisor with real processes: capped logs, streamed metric values, direct exec, graceful
SIGTERM, and a time limit that holds when the orchestrator is SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from idealab.executor.base import JobResult, JobSpec
from idealab.executor.capped_log import MARKER_LEN, CappedLog
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool
from idealab.executor.supervisor import EXIT_NAME, JOB_PGID_NAME, ExitRecord, job_argv
from idealab.manifest import Goal, MetricSpec, Reduce
from idealab.metrics import MetricStream, extract_values, judge, stream_values
from test_executor_local import group_alive, wait_gone

# ------------------------------------------------------------------------------------------ capped log


def test_capped_log_keeps_head_and_tail_and_says_what_it_dropped(tmp_path: Path) -> None:
    cap = 1000
    data = b"".join(f"line {i:05d}\n".encode() for i in range(5000))  # 55,000 bytes
    log = CappedLog(tmp_path / "out.log", cap)
    for start in range(0, len(data), 333):  # odd chunk sizes, one bigger than the tail region
        log.write(data[start : start + 333])
    log.write(data[:700])
    log.close()
    text = (tmp_path / "out.log").read_bytes()
    assert len(text) <= cap
    assert text.startswith(data[: cap // 2])
    assert text.endswith(data[:700][-(cap - cap // 2 - MARKER_LEN) // 2 :])
    dropped = int(re.search(rb"\[idealab: +(\d+) bytes of output dropped", text).group(1))  # type: ignore[union-attr]
    assert log.total == len(data) + 700 and log.dropped == dropped
    assert len(text) == log.total - dropped + MARKER_LEN


def test_capped_log_in_small_writes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 200
    with CappedLog(tmp_path / "out.log", 1000) as log:
        for i in range(0, len(data), 7):
            log.write(data[i : i + 7])
    text = (tmp_path / "out.log").read_bytes()
    assert len(text) <= 1000 and text.startswith(data[:500]) and data.endswith(text[-150:])
    assert len(text) == log.total - log.dropped + MARKER_LEN


def test_capped_log_under_its_cap_is_the_plain_output(tmp_path: Path) -> None:
    with CappedLog(tmp_path / "out.log", 1000) as log:
        log.write(b"a" * 400)
        log.write(b"b" * 400)
    assert (tmp_path / "out.log").read_bytes() == b"a" * 400 + b"b" * 400 and log.dropped == 0


# ---------------------------------------------------------------------------------------- metric stream


@pytest.mark.parametrize("reduce", [Reduce.MIN, Reduce.MAX, Reduce.LAST])
@pytest.mark.parametrize("poison", [None, "NaN", "Infinity"])
def test_capped_metric_stream_judges_like_all_values(reduce: Reduce, poison: str | None) -> None:
    spec = MetricSpec(name="loss", goal=Goal.MINIMIZE, reduce=reduce, regex=re.compile(r"val (\d+\.\d+)"))
    lines = []
    for i in range(3000):
        value = 5.0 + math.sin(i / 7.0) * (1 + i % 13)  # min and max somewhere in the middle
        lines.append(f'@metric {{"name": "loss", "value": {value!r}, "step": {i}}}')
        lines.append(f'@metric {{"name": "lr", "value": {i}}}')
        if i % 100 == 0:
            lines.append(f"step {i} val {value + 1:.3f} done")
        if poison and i == 1500:
            lines.append(f'@metric {{"name": "loss", "value": {poison}}}')
    text = "\n".join(lines)
    stream = MetricStream("loss", spec.regex, max_values=50)
    encoded = text.encode()
    for start in range(0, len(encoded), 4093):
        stream.feed(encoded[start : start + 4093])
    stream.finish()
    everything = extract_values(text, spec)
    kept = stream_values(stream)
    assert len(kept) <= 50 + 3 and stream.seen == len(everything) and stream.dropped == len(everything) - len(kept)
    assert kept[:25] == everything[:25] and kept[-25:] == everything[-25:]
    assert judge(kept, spec) == judge(everything, spec)


def test_metric_stream_skips_an_endless_line_without_buffering_it() -> None:
    stream = MetricStream("loss", None, max_values=10)
    stream.feed(b"x" * (3 << 20))
    stream.feed(b'y\n@metric {"name": "loss", "value": 1.5}\n')
    stream.finish()
    assert [v.value for v in stream_values(stream)] == [1.5]


# ----------------------------------------------------------------------------------------- direct exec


def test_simple_commands_are_execd_without_a_shell() -> None:
    assert job_argv("python train.py --lr=0.1 'a b'") == ["python", "train.py", "--lr=0.1", "a b"]
    for command in ("a && b", "x > out", "echo $HOME", "A=1 python x.py", "exit 3", "cd d; ls", "ls *.py"):
        assert job_argv(command) == ["/bin/sh", "-c", command]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_the_programs_sigterm_handler_gets_the_grace_period(tmp_path: Path) -> None:
    # given as a shell-like string; the handler needs far longer than the old 5 ms before SIGKILL
    (tmp_path / "x.py").write_text(
        textwrap.dedent(
            """
            import signal, sys, time
            def on_term(*_):
                time.sleep(1.0)  # saving a checkpoint
                open("saved.txt", "w").write("checkpoint")
                sys.exit(0)
            signal.signal(signal.SIGTERM, on_term)
            print("ready", flush=True)
            time.sleep(600)
            """
        )
    )
    for n, command in enumerate(["python x.py", "python x.py 2>&1 | cat"]):  # exec'd, and under a shell
        (tmp_path / "saved.txt").unlink(missing_ok=True)

        async def main(command: str = command, n: int = n) -> JobResult:
            backend = LocalBackend(SlotPool.cpu_only(1), grace_s=20)
            job = JobSpec(f"term{n}", tmp_path, command, 2.0, log_dir=tmp_path / "logs" / str(n))
            return await backend.wait(await backend.submit(job))

        result = run(main())
        assert result.timed_out and (tmp_path / "saved.txt").read_text() == "checkpoint", command


def test_cancel_reaches_the_program_through_the_supervisor(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (open('bye.txt', 'w').write('bye'), sys.exit(0)))\n"
        "open('up.txt', 'w').write('up')\n"
        "time.sleep(600)\n"
    )

    async def main() -> JobResult:
        backend = LocalBackend(SlotPool.cpu_only(1), grace_s=20)
        handle = await backend.submit(JobSpec("c", tmp_path, "python x.py", 600, log_dir=tmp_path / "logs"))
        while not (tmp_path / "up.txt").exists():
            await asyncio.sleep(0.05)
        await backend.cancel(handle)
        return await backend.wait(handle)

    result = run(main())
    assert result.cancelled and (tmp_path / "bye.txt").read_text() == "bye"


def test_metric_values_are_streamed_and_capped(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "for i in range(20000):\n"
        "    print('@metric {\"name\": \"loss\", \"value\": %d}' % (100000 - i if i != 7000 else -5))\n"
    )

    async def main() -> JobResult:
        backend = LocalBackend(SlotPool.cpu_only(1), max_metric_values=100, log_cap_bytes=64 * 1024)
        spec = JobSpec("m", tmp_path, "python m.py", 60, log_dir=tmp_path / "logs", metric_name="loss")
        return await backend.wait(await backend.submit(spec))

    result = run(main())
    assert result.exit_code == 0 and result.metrics_path is not None
    values = [json.loads(line)[1] for line in result.metrics_path.read_text().splitlines()]
    assert len(values) <= 103 and min(values) == -5 and values[-1] == 80001
    assert result.stdout_path.stat().st_size <= 64 * 1024
    record = ExitRecord.read(tmp_path / "logs")
    assert record is not None and record.metric_values_seen == 20000 and record.stdout_dropped > 0


# ----------------------------------------------------------------------------- a SIGKILLed orchestrator

ORCHESTRATOR = """
import asyncio, sys
from pathlib import Path
from idealab.executor.base import JobSpec
from idealab.executor.local import LocalBackend
from idealab.executor.slots import SlotPool

async def main():
    work = Path(sys.argv[1])
    backend = LocalBackend(SlotPool.cpu_only(1), grace_s=1)
    spec = JobSpec("orphan", work, "python -c 'import time; time.sleep(600)'", 3.0, log_dir=work / "logs")
    await backend.submit(spec, lambda start: print(start.pid, flush=True))
    await asyncio.Event().wait()  # until killed

asyncio.run(main())
"""


def test_a_sigkilled_orchestrators_job_stops_at_its_limit(tmp_path: Path) -> None:
    orchestrator = subprocess.Popen(
        [sys.executable, "-c", ORCHESTRATOR, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert orchestrator.stdout is not None
    supervisor_pid = int(orchestrator.stdout.readline())
    pgid_file = tmp_path / "logs" / JOB_PGID_NAME
    deadline = time.monotonic() + 30
    while not pgid_file.exists():  # the supervisor has started the job
        assert orchestrator.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    job_pgid = int(pgid_file.read_text())
    orchestrator.send_signal(signal.SIGKILL)
    orchestrator.wait()
    orchestrator.stdout.close()
    assert group_alive(job_pgid)  # the job outlived the orchestrator ...
    assert wait_gone(supervisor_pid, timeout_s=60)  # ... until the supervisor ended it at its limit
    assert not group_alive(job_pgid)
    record = ExitRecord.read(tmp_path / "logs")
    assert record is not None and record.ended == "timeout"
    assert (tmp_path / "logs" / EXIT_NAME).is_file()


def test_files_in_the_workspace_do_not_shadow_the_supervisors_modules(tmp_path: Path) -> None:
    for module in ("json", "selectors", "idealab"):
        (tmp_path / f"{module}.py").write_text("raise SystemExit('shadowed')\n")

    async def main() -> JobResult:
        backend = LocalBackend(SlotPool.cpu_only(1))
        return await backend.wait(await backend.submit(JobSpec("s", tmp_path, "true", 30, log_dir=tmp_path / "logs")))

    result = run(main())
    assert result.exit_code == 0 and result.error is None


def test_a_killed_supervisor_does_not_leave_its_job_running(tmp_path: Path) -> None:
    async def main() -> JobResult:
        backend = LocalBackend(SlotPool.cpu_only(1))
        job = JobSpec("k", tmp_path, "sleep 600", 600, log_dir=tmp_path / "logs")
        handle = await backend.submit(job, lambda start: pids.append(start.pid or 0))
        while not (tmp_path / "logs" / JOB_PGID_NAME).exists():
            await asyncio.sleep(0.02)
        os.kill(pids[0], signal.SIGKILL)  # the supervisor, as the kernel's OOM killer would
        return await backend.wait(handle)

    pids: list[int] = []
    result = run(main())
    assert result.error is not None and "supervisor ended without a result" in result.error
    assert not group_alive(int((tmp_path / "logs" / JOB_PGID_NAME).read_text()))
