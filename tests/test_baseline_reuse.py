"""`idealab run --reuse-baseline FROM_WORKDIR`: real runs of the noisy environment through the command line.

A later run of the same experiment (environment content, preset, hardware) takes the earlier run's
measured baseline repeats instead of running them again; any difference is refused, named; the earlier
run's work directory is only read. A cluster run's hardware is declared (backend, where its jobs go, GPUs
per job) and never matches a local run's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from idealab.baseline_reuse import ReuseError, load_reusable_baseline
from idealab.executor.backends import BackendChoice, RayOptions
from idealab.executor.slurm import SlurmOptions
from idealab.identity import environment_identity
from idealab.search.journal import BASELINE_EPOCH
from idealab.store import Store

NOISY = Path(__file__).parent / "envs" / "noisy"


def idealab(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "idealab", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def search(env: Path, workdir: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return idealab(
        "run", "--env", env, "--workdir", workdir, "--ideator", "mutate", "--epochs", "1", "--ideas-per-epoch", "1",
        "--confirm-top", "0", "--slots", "2", "--quiet", *extra,
    )  # fmt: skip


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: its sha256 and modification time (ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished run that measured its baseline 3 times: (its environment, its work directory)."""
    base = tmp_path_factory.mktemp("reuse")
    env = base / "noisy"
    shutil.copytree(NOISY, env)
    workdir = base / "earlier"
    done = search(env, workdir, "--baseline-runs", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    return env, workdir


def status(workdir: Path) -> dict:
    done = idealab("status", "--workdir", workdir, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_new_run_reuses_the_measured_baseline_and_runs_no_baseline_job(earlier, tmp_path):
    env, source = earlier
    before = snapshot(source)
    workdir = tmp_path / "later"
    done = search(env, workdir, "--reuse-baseline", source, "--seed", "7")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"reused from {source}" in done.stdout

    assert snapshot(source) == before  # only read: no file made, no byte and no modification time changed
    with Store.open_readonly(source, leave_untouched=True) as store:  # (`status` would add SQLite's -shm)
        theirs = [r.metric for r in store.ideas(1, epoch=BASELINE_EPOCH)]
    ours = status(workdir)["baseline"]
    assert ours["values"] == theirs and len(theirs) == 3
    assert ours["mean"] == pytest.approx(sum(theirs) / 3) and ours["sd"] > 0 and ours["noise_low"] is not None
    assert (ours["source"], ours["reused"], ours["reused_from"]) == ("measured", 3, str(source))
    data = status(workdir)
    assert data["compute"]["by_purpose"]["baseline"]["job_hours"] == 0
    assert all("reused from" in e["reason"] for e in data["baseline_experiments"])
    assert data["experiments"][0]["verdict"] is not None  # judged against the reused bar
    with Store.open_readonly(workdir) as store:  # self-contained: the trials are rows of the new run
        rows = store.ideas(1, epoch=BASELINE_EPOCH)
        assert [r.metric for r in rows] == theirs
        assert all(r.payload["reused_from"] == str(source) for r in rows)
        assert all(store.jobs(idea_id=r.id) == [] for r in rows)  # no job ran for them
    shown = idealab("status", "--workdir", workdir)
    assert f"3 reused from {source}" in shown.stdout

    again = search(env, workdir, "--reuse-baseline", source, "--seed", "7")  # the same command resumes
    assert again.returncode == 0, again.stdout + again.stderr
    assert status(workdir)["baseline"]["values"] == theirs
    assert snapshot(source) == before


def test_a_different_environment_content_or_preset_is_refused_with_each_difference(earlier, tmp_path):
    env, source = earlier
    before = snapshot(source)
    changed = tmp_path / "changed"
    shutil.copytree(env, changed)
    script = changed / "train.py"
    script.write_text(script.read_text() + "# a comment changes the content\n")
    done = search(changed, tmp_path / "a", "--reuse-baseline", source)
    assert done.returncode != 0
    assert "cannot reuse the baseline" in done.stderr and "environment content: files differ: train.py" in done.stderr
    assert not (tmp_path / "a" / "idealab.db").exists()  # refused before anything was created

    done = search(env, tmp_path / "b", "--reuse-baseline", source, "--preset", "slow")
    assert done.returncode != 0
    assert "preset: None there, 'slow' here" in done.stderr
    assert not (tmp_path / "b" / "idealab.db").exists()

    done = search(env, tmp_path / "c", "--reuse-baseline", source, "--baseline-value", "2.0", "--baseline-runs", "0")
    assert done.returncode != 0 and "excludes --baseline-runs 0" in done.stderr
    assert snapshot(source) == before


def test_other_hardware_is_refused_naming_each_part(earlier):
    env, source = earlier
    identity = environment_identity(env)
    with pytest.raises(ReuseError) as refused:
        load_reusable_baseline(source, None, identity, {"cpu_model": "Other CPU", "cpu_threads": 512})
    assert "hardware cpu_model:" in str(refused.value) and "'Other CPU' here" in str(refused.value)
    assert "hardware cpu_threads:" in str(refused.value)


def test_baseline_runs_beyond_the_reused_ones_are_measured_here(earlier, tmp_path):
    env, source = earlier
    workdir = tmp_path / "more"
    done = search(env, workdir, "--reuse-baseline", source, "--baseline-runs", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    header = done.stdout + done.stderr  # (the header goes to the console's stream)
    assert "3 run(s) reused from" in header and "1 measured here" in header
    with Store.open_readonly(workdir) as store:
        rows = store.ideas(1, epoch=BASELINE_EPOCH)
        assert [bool(store.jobs(idea_id=r.id)) for r in rows] == [False, False, False, True]
    assert status(workdir)["baseline"]["n"] == 4


def test_a_cluster_runs_hardware_is_its_backend_where_its_jobs_go_and_gpus_per_job() -> None:
    slurm = BackendChoice("slurm", SlurmOptions(partition="gpu"))
    assert slurm.hardware_identity(1) == {"backend": "slurm", "partition": "gpu", "gres": "gpu:1", "gpus_per_job": 1}
    assert slurm.hardware_identity(1, ["--gres=gpu:h100:1"])["gres"] == "gpu:h100:1"  # the manifest's asks more
    ray = BackendChoice("ray", ray=RayOptions("http://me:secret@head:8265"))
    assert ray.hardware_identity(2) == {"backend": "ray", "address": "http://head:8265", "gpus_per_job": 2}


def as_cluster_run(source: Path, copy: Path, hardware: dict) -> Path:
    """A copy of a finished run, recorded as if its jobs had run on a cluster of `hardware`."""
    shutil.copytree(source, copy)
    with Store.open(copy) as store:
        run = store.get_run()
        assert run is not None
        store.set_run_config(run.id, {**run.config, "hardware": hardware})
    return copy


def test_a_local_and_a_cluster_run_never_share_a_baseline(earlier, tmp_path):
    env, source = earlier
    identity = environment_identity(env)
    slurm = BackendChoice("slurm", SlurmOptions(partition="gpu")).hardware_identity(0)
    with pytest.raises(ReuseError, match="its jobs ran on the local backend, this run's go to the slurm backend"):
        load_reusable_baseline(source, None, identity, slurm)

    cluster_run = as_cluster_run(source, tmp_path / "cluster", slurm)
    assert len(load_reusable_baseline(cluster_run, None, identity, slurm).metrics) == 3  # the same cluster
    other = {**slurm, "partition": "cpu"}
    with pytest.raises(ReuseError, match="hardware partition: 'gpu' there, 'cpu' here"):
        load_reusable_baseline(cluster_run, None, identity, other)
    done = search(env, tmp_path / "local", "--reuse-baseline", cluster_run)  # a local run, from the command line
    assert done.returncode != 0
    assert "its jobs ran on the slurm backend, this run's go to the local backend" in " ".join(done.stderr.split())
    assert not (tmp_path / "local" / "idealab.db").exists()
