"""SlotPool (GPU ids and CPU slots, strict FIFO) and GPU id detection/parsing."""

from __future__ import annotations

import asyncio
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from idealab.executor.gpus import choose_gpu_ids, detect_gpu_ids, parse_gpu_list, visible_gpu_ids
from idealab.executor.slots import Lease, SlotPool


async def _settle() -> None:
    """Let every ready task run (the pool grants synchronously, so a few loop turns suffice)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_request_for_more_gpus_than_exist_fails_at_once() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="needs 5 GPU"):
            await SlotPool([0, 1, 2, 3]).acquire(5)
        with pytest.raises(ValueError, match="has 0"):
            await SlotPool.cpu_only(4).acquire(1)
        with pytest.raises(ValueError):
            await SlotPool([0]).acquire(-1)

    asyncio.run(main())


def test_invalid_pools_are_rejected() -> None:
    with pytest.raises(ValueError, match="distinct"):
        SlotPool([0, 0])
    with pytest.raises(ValueError, match="at least 1"):
        SlotPool([0], cpu_slots=0)


def test_leases_are_disjoint_and_waiters_get_freed_gpus() -> None:
    async def main() -> None:
        pool = SlotPool([0, 1, 2, 3])
        a = await pool.acquire(2)
        b = await pool.acquire(2)
        assert len(set(a.gpu_ids) | set(b.gpu_ids)) == 4
        third = asyncio.create_task(pool.acquire(1))
        await _settle()
        assert not third.done()
        b.release()
        lease = await asyncio.wait_for(third, 1)
        assert set(lease.gpu_ids) <= set(b.gpu_ids)
        assert not set(lease.gpu_ids) & set(a.gpu_ids)

    asyncio.run(main())


def test_fifo_head_of_line_keeps_a_big_job_from_starving() -> None:
    async def main() -> None:
        pool = SlotPool([0, 1, 2, 3])
        small = await pool.acquire(1)
        big = asyncio.create_task(pool.acquire(4))
        await _settle()
        later_small = asyncio.create_task(pool.acquire(1))
        await _settle()
        # three GPUs are free, but the 1-GPU request waits behind the 4-GPU one
        assert not big.done() and not later_small.done()
        small.release()
        big_lease = await asyncio.wait_for(big, 1)
        assert big_lease.gpu_ids == (0, 1, 2, 3)
        await _settle()
        assert not later_small.done()
        big_lease.release()
        assert len((await asyncio.wait_for(later_small, 1)).gpu_ids) == 1

    asyncio.run(main())


def test_cancelled_head_waiter_lets_the_next_one_in() -> None:
    async def main() -> None:
        pool = SlotPool([0, 1, 2, 3])
        held = await pool.acquire(3)
        big = asyncio.create_task(pool.acquire(4))
        await _settle()
        small = asyncio.create_task(pool.acquire(1))
        await _settle()
        assert not small.done()
        big.cancel()
        lease = await asyncio.wait_for(small, 1)
        assert set(lease.gpu_ids).isdisjoint(held.gpu_ids)
        assert pool.waiting == 0

    asyncio.run(main())


def test_cpu_slots_in_a_gpu_pool_are_separate_and_bounded() -> None:
    async def main() -> None:
        pool = SlotPool([0, 1], cpu_slots=1)
        cpu = await pool.acquire(0)
        assert cpu.is_cpu and cpu.gpu_ids == ()
        second_cpu = asyncio.create_task(pool.acquire(0))
        await _settle()
        assert not second_cpu.done()
        gpu = await asyncio.wait_for(pool.acquire(2), 1)  # GPU requests do not queue behind CPU ones
        assert gpu.gpu_ids == (0, 1)
        cpu.release()
        assert (await asyncio.wait_for(second_cpu, 1)).is_cpu

    asyncio.run(main())


def test_release_is_idempotent_and_context_manager_releases() -> None:
    async def main() -> None:
        pool = SlotPool([0, 1])
        lease = await pool.acquire(1)
        lease.release()
        lease.release()
        assert pool.free_gpus == (0, 1)
        with pytest.raises(RuntimeError, match="boom"):
            async with pool.lease(2) as held:
                assert not pool.free_gpus and held.gpu_ids == (0, 1)
                raise RuntimeError("boom")
        assert pool.free_gpus == (0, 1)

    asyncio.run(main())


def test_random_load_never_shares_a_gpu_and_respects_cpu_slots() -> None:
    rng = random.Random(7)
    gpu_ids = [0, 1, 2, 3]
    holders: dict[int, int] = {}
    cpu_in_use = 0
    max_cpu_in_use = 0

    async def job(n: int, pool: SlotPool) -> None:
        nonlocal cpu_in_use, max_cpu_in_use
        k = rng.choice([0, 1, 1, 2, 4])
        lease: Lease = await pool.acquire(k)
        try:
            assert len(lease.gpu_ids) == k
            for g in lease.gpu_ids:
                assert g not in holders, f"GPU {g} held by job {holders[g]} and job {n}"
                holders[g] = n
            if k == 0:
                cpu_in_use += 1
                max_cpu_in_use = max(max_cpu_in_use, cpu_in_use)
            await asyncio.sleep(rng.random() * 0.003)
        finally:
            for g in lease.gpu_ids:
                del holders[g]
            if k == 0:
                cpu_in_use -= 1
            lease.release()

    async def main() -> None:
        pool = SlotPool(gpu_ids, cpu_slots=2)
        await asyncio.wait_for(asyncio.gather(*(job(n, pool) for n in range(200))), 20)
        assert pool.free_gpus == tuple(gpu_ids) and pool.free_cpu_slots == 2

    asyncio.run(main())
    assert max_cpu_in_use == 2


# ------------------------------------------------------------------------------------------ GPU ids


def test_parse_gpu_list() -> None:
    assert parse_gpu_list("0,1,3") == [0, 1, 3]
    assert parse_gpu_list(" 2 , 0 ") == [2, 0]
    for bad, words in [("", "comma-separated"), ("0,,1", "empty item"), ("0,x", "'x'"), ("1,1", "twice")]:
        with pytest.raises(ValueError, match=words):
            parse_gpu_list(bad)
    with pytest.raises(ValueError, match="not a GPU id"):
        parse_gpu_list("-1")


def _fake_nvidia_smi(bin_dir: Path, script: str) -> None:
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def test_detect_gpu_ids_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(tmp_path, 'test "$1" = "--query-gpu=index" || exit 9\nprintf "0\\n1\\n3\\n"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpu_ids() == [0, 1, 3]
    assert choose_gpu_ids(None) == [0, 1, 3]
    assert choose_gpu_ids("2") == [2]


def test_detect_gpu_ids_is_empty_when_nvidia_smi_fails_or_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpu_ids() == []
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert detect_gpu_ids() == []


def test_a_set_cuda_visible_devices_limits_the_gpus_in_the_users_numbering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, 'printf "0\\n1\\n2\\n3\\n"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert choose_gpu_ids(None) == [3, 1]
    assert choose_gpu_ids("1") == [1]
    with pytest.raises(ValueError, match="not visible: CUDA_VISIBLE_DEVICES allows 3,1"):
        choose_gpu_ids("0,1")


@pytest.mark.parametrize(("value", "ids"), [("", []), ("-1", []), ("0,2,-1,3", [0, 2]), (" 4 , 5 ", [4, 5])])
def test_visible_devices_are_read_as_cuda_reads_them(value: str, ids: list[int]) -> None:
    assert visible_gpu_ids({"CUDA_VISIBLE_DEVICES": value}) == ids
    assert choose_gpu_ids(None, {"CUDA_VISIBLE_DEVICES": value}) == ids


def test_visible_devices_by_uuid_fail_with_the_way_out() -> None:
    assert visible_gpu_ids({}) is None
    with pytest.raises(ValueError, match="GPU indices"):
        visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "GPU-8f2c1d7e-0000"})


def test_run_refuses_gpus_hidden_by_cuda_visible_devices(tmp_path: Path) -> None:
    quad = Path(__file__).parent / "envs" / "quad"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1"}
    cmd = [sys.executable, "-m", "idealab", "run", "--env", str(quad), "--gpus", "0", "--workdir", str(tmp_path / "w")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "not visible: CUDA_VISIBLE_DEVICES allows 1" in " ".join(done.stderr.split())
    assert not (tmp_path / "w").exists()
