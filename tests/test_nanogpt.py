"""The built-in nanogpt environment: shard format, token-by-token validation, causality, the training budget,
the saved artefact and the separate scorer (and what it refuses), manifest presets. CPU only, tiny models;
the end-to-end runs are marked slow."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from idealab.executor.bwrap import bwrap_problem
from idealab.executor.local import LocalBackend
from idealab.executor.runner import Outcome, copy_omits, run_job
from idealab.executor.sandbox import copy_environment
from idealab.executor.slots import SlotPool
from idealab.manifest import PROTECT_BEGIN, PROTECT_END, Clock, load_manifest
from idealab.metrics import extract_values, judge
from idealab.paths import DATA_DIR_VAR, builtin_envs_dir
from idealab.status import Status

ENV_DIR = builtin_envs_dir() / "nanogpt"
MODULES = ("shards", "harness", "train_gpt", "prepare", "score")


@pytest.fixture(scope="module")
def ng() -> Iterator[SimpleNamespace]:
    """The environment's modules, imported from its directory (as a job does) and unloaded afterwards,
    so their short names cannot clash with another environment's."""
    for name in MODULES:  # another environment's module of the same short name (prepare, score, harness)
        sys.modules.pop(name, None)
    sys.path.insert(0, str(ENV_DIR))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin, badly so on a busy 2-core machine
    try:
        yield SimpleNamespace(**{name: importlib.import_module(name) for name in MODULES})
    finally:
        torch.set_num_threads(threads)
        sys.path.remove(str(ENV_DIR))
        for name in MODULES:
            sys.modules.pop(name, None)


def tiny_model(ng: SimpleNamespace, leaky: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ng.train_gpt.GPT(ng.train_gpt.MODEL_CONFIGS["tiny"])
    if leaky:  # planted bug: every position attends to the whole sequence, later tokens included
        for block in model.transformer.h:
            attn = block.attn

            def full_attention(x: torch.Tensor, attn: torch.nn.Module = attn) -> torch.Tensor:
                q, k, v = attn._heads(x)
                return attn._merge(torch.nn.functional.scaled_dot_product_attention(q, k, v))

            attn.forward = full_attention
    return model


def train_briefly(model: torch.nn.Module, steps: int = 25, T: int = 32) -> None:
    torch.manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        tokens = torch.randint(0, 256, (8, T + 1))
        _, loss = model(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def random_batch(n: int = 4, T: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 256, (n, T + 1), generator=torch.Generator().manual_seed(2))
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


# ------------------------------------------------------------------------------------------ shards


def test_shard_round_trip(ng: SimpleNamespace, tmp_path: Path) -> None:
    tokens = np.random.default_rng(0).integers(0, 50257, 1000)
    path = tmp_path / "x_val_000000.bin"
    ng.shards.write_shard(str(path), tokens)
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert list(header[:3]) == [20240520, 1, 1000] and not header[3:].any()
    assert path.stat().st_size == 256 * 4 + 2 * 1000
    assert np.array_equal(ng.shards.load_tokens(str(path)), tokens)


def test_corrupt_shards_are_rejected_with_a_clear_error(ng: SimpleNamespace, tmp_path: Path) -> None:
    path = tmp_path / "bad.bin"
    ng.shards.write_shard(str(path), np.arange(100))
    raw = bytearray(path.read_bytes())
    raw[0:4] = np.int32(12345).tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(ng.shards.ShardError, match="bad magic number 12345"):
        ng.shards.load_tokens(str(path))
    ng.shards.write_shard(str(path), np.arange(100))
    path.write_bytes(path.read_bytes()[:-10])  # truncated: the header promises more tokens
    with pytest.raises(ng.shards.ShardError, match="header says 100 tokens"):
        ng.shards.load_tokens(str(path))


def test_ranks_read_disjoint_consecutive_chunks(ng: SimpleNamespace, tmp_path: Path) -> None:
    ng.shards.write_shard(str(tmp_path / "d_train_000001.bin"), np.arange(1000))
    pattern = str(tmp_path / "*_train_*.bin")
    x0, y0 = ng.shards.DistributedDataLoader(pattern, 2, 8, rank=0, world=2).next_batch()
    x1, _ = ng.shards.DistributedDataLoader(pattern, 2, 8, rank=1, world=2).next_batch()
    assert x0.flatten().tolist() == list(range(16)) and x1.flatten().tolist() == list(range(16, 32))
    assert torch.equal(y0, x0 + 1)


def test_prepare_cuts_a_token_stream_into_val_then_train_shards(ng: SimpleNamespace, tmp_path: Path) -> None:
    stream = [np.arange(0, 10), np.arange(10, 25)]
    assert ng.prepare.write_shards(iter(stream), str(tmp_path), "fw", shard_tokens=8) == 4
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fw_train_000001.bin", "fw_train_000002.bin", "fw_train_000003.bin", "fw_val_000000.bin"]
    assert ng.shards.load_tokens(str(tmp_path / "fw_val_000000.bin")).tolist() == list(range(8))
    assert ng.shards.load_tokens(str(tmp_path / "fw_train_000003.bin")).tolist() == [24]
    assert ng.prepare.write_shards(iter(stream), str(tmp_path / "cut"), "fw", 8, max_shards=2) == 2


def test_fineweb_loader_runs_on_local_documents_through_datasets(ng: SimpleNamespace, tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    docs = tmp_path / "fineweb-sample.jsonl"
    texts = ["The quick brown fox.", "Jumps over the lazy dog!", "Third document, with more words in it."]
    docs.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "shards"
    ng.prepare.main(["fineweb", "--local-files", str(docs), "--tokenizer", "bytes", "--shard-tokens", "32",
                     "--out", str(out)])
    shards = sorted(out.glob("fineweb_*.bin"), key=lambda p: p.stem.rsplit("_", 1)[1])  # by shard number
    assert shards[0].name == "fineweb_val_000000.bin" and len(shards) > 1
    tokens = np.concatenate([ng.shards.load_tokens(str(p)) for p in shards])
    assert bytes(tokens.astype(np.uint8)).decode() == "".join("\n" + t for t in texts)


def test_validation_sequences_cover_exactly_the_requested_tokens(ng: SimpleNamespace, tmp_path: Path) -> None:
    ng.shards.write_shard(str(tmp_path / "d_val_000000.bin"), np.arange(300))
    pattern = str(tmp_path / "*_val_*.bin")
    parts = [ng.shards.load_val_sequences(pattern, 256, 32, rank=r, world=2) for r in range(2)]
    targets = torch.cat([y.flatten() for _, y in parts])
    assert targets.tolist() == list(range(1, 257))
    with pytest.raises(ValueError, match="not a multiple"):
        ng.shards.load_val_sequences(pattern, 250, 32)


# ----------------------------------------------------------------------- token-by-token validation


def test_token_by_token_equals_full_forward(ng: SimpleNamespace) -> None:
    model = tiny_model(ng)
    train_briefly(model)
    x, y = random_batch()
    ok, full, tbt = ng.score.check_causality(model, x, y, contextlib.nullcontext(), 1e-4)
    assert ok and abs(full - tbt) < 1e-5
    logits, _ = model(x, y)
    cache, steps = None, []
    with torch.no_grad():
        for t in range(x.size(1)):
            step_logits, cache = model.forward_with_cache(x[:, t : t + 1], cache)
            steps.append(step_logits)
    assert torch.allclose(torch.cat(steps, dim=1), logits, atol=1e-4)


def test_planted_future_leak_is_caught(ng: SimpleNamespace) -> None:
    model = tiny_model(ng, leaky=True)
    train_briefly(model)
    x, y = random_batch()
    ok, full, tbt = ng.score.check_causality(model, x, y, contextlib.nullcontext(), 1e-4)
    assert not ok and abs(full - tbt) > 1e-4  # a causal model agrees to ~1e-7 in float32


@pytest.mark.gpu
def test_token_by_token_matches_in_bf16_on_gpu(ng: SimpleNamespace) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny_model(ng).cuda()
    x, y = random_batch(16, 128)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    ok, full, tbt = ng.score.check_causality(model, x.cuda(), y.cuda(), autocast, 0.02)
    assert ok, (full, tbt)


def test_the_papers_rank0_share_is_every_eighth_batch_of_32_sequences(ng: SimpleNamespace) -> None:
    share = ng.score.in_original_rank0_share(0, 10_485_760 // 1024)
    assert int(share.sum()) * 1024 == 1_310_720  # the tokens the paper's code printed the loss of
    assert share[:32].all() and not share[32:256].any() and share[256:288].all()
    # the same sequences, seen from the second of 2 ranks here (it starts at sequence 5120 = 160 * 32)
    assert torch.equal(ng.score.in_original_rank0_share(5120, 5120), share[5120:])


def test_validation_reports_the_mean_and_the_rank0_share_in_float32(ng: SimpleNamespace, tmp_path: Path) -> None:
    T = 16
    tokens = np.random.default_rng(0).integers(0, 256, 64 * T + 1)
    ng.shards.write_shard(str(tmp_path / "d_val_000000.bin"), tokens)
    settings = ng.score.ValSettings.from_env({
        "NANOGPT_VAL_SIZE": str(64 * T), "NANOGPT_SEQ_LEN": str(T), "NANOGPT_VAL_BATCH_SEQS": "20",
        "NANOGPT_VAL_GLOB": str(tmp_path / "*_val_*.bin"),
    })
    assert settings.val_dtype == "float32"  # the paper's validation numerics are the default
    model = tiny_model(ng)
    x, y = ng.shards.load_val_sequences(settings.val_glob, 64 * T, T)
    got = ng.score.evaluate(model, settings, "cpu", x, y, order=torch.randperm(64))  # any order: the same sums
    with torch.no_grad():
        per_seq = torch.nn.functional.cross_entropy(model(x, y)[0].transpose(1, 2), y, reduction="none").mean(1)
    assert got.mean == pytest.approx(per_seq.mean().item(), abs=1e-5)
    assert got.rank0_share == pytest.approx(per_seq[:32].mean().item(), abs=1e-5)  # sequences 0..31 of 64


def test_module_docstring_is_outside_every_protected_region() -> None:
    lines = (ENV_DIR / "train_gpt.py").read_text().splitlines()
    docstring_end = next(i for i, line in enumerate(lines[1:], start=1) if line.endswith('"""'))
    assert not any(PROTECT_BEGIN in line or PROTECT_END in line for line in lines[: docstring_end + 1])


# --------------------------------------------------------------------- clock, schedule, metric line


def test_clock_stops_at_the_limit(ng: SimpleNamespace) -> None:
    for kind in ("wall", "cpu"):
        clock = ng.harness.TrainClock("cpu", 0.0, kind)
        clock.start()
        assert clock.should_stop()
        clock = ng.harness.TrainClock("cpu", 3600.0, kind)
        clock.start()
        assert not clock.should_stop()
    with pytest.raises(ValueError, match="choose wall or cpu"):
        ng.harness.TrainClock("cpu", 1.0, "gpu")


def test_the_budget_counts_from_the_start_of_the_process(ng: SimpleNamespace) -> None:
    clock = ng.harness.TrainClock("cpu", 3600.0)
    clock.start()
    assert clock.elapsed_s() >= ng.harness.process_age_s() - 1.0 > 0.0  # start-up (imports) included


def test_sigusr1_from_the_executor_stops_training(ng: SimpleNamespace) -> None:
    assert signal.getsignal(signal.SIGUSR1) is ng.harness._on_sigusr1  # from the import on, before start()
    try:
        clock = ng.harness.TrainClock("cpu", 3600.0)
        clock.start()
        assert not clock.should_stop()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert clock.should_stop()
    finally:
        ng.harness._STOP_REQUESTED.clear()


def test_the_artefact_holds_the_weights_the_scorer_loads(ng: SimpleNamespace, tmp_path: Path) -> None:
    model = tiny_model(ng)
    path = ng.harness.save_artefact(model, 7, 1.5, out_dir=str(tmp_path))
    saved = ng.score.load_artefact(path)
    assert saved["step"] == 7 and saved["train_time_s"] == 1.5
    tg = ng.train_gpt
    rebuilt = tg.GPT(tg.MODEL_CONFIGS["tiny"])  # what build_model() gives with NANOGPT_MODEL=tiny
    rebuilt.load_state_dict(saved["state_dict"])
    x, _ = random_batch()
    assert torch.equal(rebuilt(x)[0], model(x)[0])
    assert not list(tmp_path.glob("*.tmp*"))  # written under a temporary name, then renamed


def test_lr_schedule_warms_up_then_decays_to_a_tenth_over_1_1(ng: SimpleNamespace) -> None:
    tg = ng.train_gpt
    assert tg.get_lr(0) == pytest.approx(tg.LEARNING_RATE / tg.WARMUP_ITERS)
    assert tg.get_lr(tg.WARMUP_ITERS) == pytest.approx(tg.LEARNING_RATE)
    assert tg.get_lr(tg.NUM_ITERATIONS) == pytest.approx(tg.LEARNING_RATE * 0.1 / 1.1)


def test_a_model_that_mixes_the_sequences_of_a_batch_is_caught(ng: SimpleNamespace) -> None:
    model = tiny_model(ng)
    x, y = random_batch(8, 16)
    assert ng.score.batch_dependence(model, x, y, contextlib.nullcontext()) < 1e-5
    inner = model.forward_with_cache

    def mixing(idx: torch.Tensor, cache: object = None) -> tuple[torch.Tensor, object]:
        logits, cache = inner(idx, cache)
        return logits + 0.5 * logits.mean(dim=0, keepdim=True), cache  # each row sees the batch's others

    model.forward_with_cache = mixing  # type: ignore[method-assign]
    assert ng.score.batch_dependence(model, x, y, contextlib.nullcontext()) > 1e-3


# ---------------------------------------------------------------------------------------- manifest


def test_presets_keep_the_papers_batch_and_validation() -> None:
    for preset in ("8gpu", "1gpu", "2gpu"):
        m = load_manifest(ENV_DIR, preset)
        env = m.run.env
        assert env["NANOGPT_VAL_SIZE"] == "10485760" and env["NANOGPT_MODEL"] == "d12"
        per_step = int(env["NANOGPT_DEVICE_BATCH"]) * int(env["NANOGPT_SEQ_LEN"]) * m.run.gpus
        assert int(env["NANOGPT_GLOBAL_BATCH"]) == 262144 and 262144 % per_step == 0
    paper = load_manifest(ENV_DIR, "8gpu")
    assert paper.budget is not None and paper.budget.seconds == 1500 and paper.budget.clock is Clock.WALL
    assert paper.score is not None and "score.py" in paper.score.command
    assert paper.score.private_data == ("nanogpt/*/*_val_*.bin",)
    one = load_manifest(ENV_DIR, "1gpu")
    assert one.budget is not None and one.budget.seconds == 12000 and one.score is not None
    smoke = load_manifest(ENV_DIR, "cpu-smoke")
    assert smoke.budget is not None and smoke.budget.clock is Clock.CPU and smoke.budget.seconds == 30
    assert smoke.run.gpus == 0 and "torchrun" not in smoke.run.command
    assert "torchrun" in load_manifest(ENV_DIR, "2gpu").run.command
    assert load_manifest(ENV_DIR).metric.valid_range == (2.5, 20.0)


def test_no_setting_is_dropped_by_the_sandbox_as_a_credential() -> None:
    from idealab.executor.sandbox import is_credential

    for preset in (None, "8gpu", "1gpu", "2gpu", "cpu-smoke"):
        assert not [name for name in load_manifest(ENV_DIR, preset).run.env if is_credential(name)]


def protected_text(path: Path) -> str:
    inside, kept = False, []
    for line in path.read_text().splitlines():
        if PROTECT_BEGIN in line:
            inside = True
        elif PROTECT_END in line:
            inside = False
        elif inside:
            kept.append(line)
    return "\n".join(kept)


def test_loss_line_time_limit_data_and_evaluation_are_protected() -> None:
    m = load_manifest(ENV_DIR)
    assert m.files.editable == ("train_gpt.py",)
    assert {"harness.py", "shards.py"} <= set(m.files.readonly) and "score.py" in m.files.hidden
    guarded = protected_text(ENV_DIR / "train_gpt.py")
    for needle in ("F.cross_entropy(", "clock.should_stop()", "clock.start()", "DistributedDataLoader(",
                   "save_artefact(raw_model", "from harness import SEED, SETTINGS"):
        assert needle in guarded, needle


# ------------------------------------------------------------------------------------- end to end


def run_env(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def smoke_env(tmp_path: Path, budget_s: str = "4") -> tuple[Path, dict[str, str]]:
    """A copy of the environment, tiny synthetic shards, and the cpu-smoke settings with a short budget."""
    work = tmp_path / "env"
    shutil.copytree(ENV_DIR, work, ignore=shutil.ignore_patterns("__pycache__"))
    data = tmp_path / "data" / "nanogpt" / "synth"
    data.mkdir(parents=True)
    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog.\n" % i for i in range(3000))
    tokens = np.frombuffer(text, dtype=np.uint8)
    spec = importlib.util.spec_from_file_location("nanogpt_shards", ENV_DIR / "shards.py")
    assert spec is not None and spec.loader is not None
    shards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shards)
    shards.write_shard(str(data / "synth_val_000000.bin"), tokens[:20_000])
    shards.write_shard(str(data / "synth_train_000001.bin"), tokens[20_000:])
    m = load_manifest(work, "cpu-smoke")
    env = {**os.environ, **m.run.env, "IDEALAB_DATA_DIR": str(tmp_path / "data"), "CUDA_VISIBLE_DEVICES": "",
           "NANOGPT_DATASET": "synth", "NANOGPT_NUM_ITERATIONS": "1000000", "NANOGPT_VAL_SIZE": "4096",
           "IDEALAB_BUDGET_S": budget_s, "IDEALAB_BUDGET_CLOCK": "cpu", "IDEALAB_SEED": "3",
           "IDEALAB_OUTPUT_DIR": str(tmp_path / "out"), "IDEALAB_ARTEFACT_DIR": str(tmp_path / "out")}
    return work, env


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """One short cpu-smoke training run (its artefact), shared by the scorer tests."""
    tmp = tmp_path_factory.mktemp("nanogpt-trained")
    work, env = smoke_env(tmp)
    proc = run_env([sys.executable, "train_gpt.py"], work, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, env, proc.stdout


def score(work: Path, env: dict[str, str], train_gpt: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the scorer on the shared artefact, with train_gpt.py replaced by `train_gpt` where given."""
    if train_gpt is not None:
        scoring = work.parent / f"scoring-{abs(hash(train_gpt))}"
        shutil.copytree(work, scoring, ignore=shutil.ignore_patterns("__pycache__"))
        (scoring / "train_gpt.py").write_text(train_gpt)
        work = scoring
    return run_env([sys.executable, "score.py"], work, env)


def patched(before: str, after: str) -> str:
    source = (ENV_DIR / "train_gpt.py").read_text()
    assert source.count(before) == 1, before
    return source.replace(before, after)


@pytest.mark.slow
def test_training_saves_the_model_and_the_scorer_reports_the_metric(trained: tuple[Path, dict[str, str], str]) -> None:
    work, env, train_out = trained
    assert "@metric" not in train_out and "saved the trained model" in train_out
    final = re.search(r"^step:(\d+) train_time:(\d+)ms", train_out, re.MULTILINE)
    assert final is not None and int(final.group(1)) > 0  # stopped by the budget, not the schedule
    proc = score(work, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": ok") == 3  # full forward = token by token at three cut points
    m = load_manifest(ENV_DIR, "cpu-smoke")
    verdict = judge(extract_values(proc.stdout, m.metric), m.metric)
    assert verdict.ok and verdict.metric is not None and math.isfinite(verdict.metric)
    again = judge(extract_values(score(work, env).stdout, m.metric), m.metric)
    assert again.metric == pytest.approx(verdict.metric, abs=1e-9)  # any order of the sequences: the same sum


def assert_tampered(proc: subprocess.CompletedProcess[str], reason: str) -> None:
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "@metric" not in proc.stdout
    assert re.search(r"^idealab-tampered: .*" + reason, proc.stdout, re.MULTILINE), proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("before", "after", "reason"),
    [
        pytest.param(  # replace the loss the scorer computes, only when imported by the scorer
            "def build_model():",
            "if sys.modules['__main__'].__file__.endswith('score.py'):\n"
            "    F.cross_entropy = lambda *a, **k: torch.zeros(a[1].shape)\n\n\ndef build_model():",
            "cross_entropy was replaced", id="replaced-evaluation-function"),
        pytest.param(  # read the validation data from the model and predict the next token from it
            "    def forward_with_cache(self, idx, cache=None):\n",
            "    def forward_with_cache(self, idx, cache=None):\n"
            "        import glob\n"
            "        val = glob.glob(os.environ['IDEALAB_DATA_DIR'] + '/nanogpt/*/*_val_*.bin')\n"
            "        open(val[0], 'rb').close()\n",
            "opened the validation data", id="reads-validation-data"),
        pytest.param(  # look at the scorer's frame, where the whole batch (future tokens too) is
            "    def forward_with_cache(self, idx, cache=None):\n",
            "    def forward_with_cache(self, idx, cache=None):\n"
            "        import inspect\n"
            "        inspect.currentframe().f_back.f_locals.get('x')\n",
            "inspected the scorer's frames", id="peeks-at-the-scorer-frame"),
        pytest.param(  # every sequence sees the others of its batch (the next sequence's first token...)
            "        cache.pos += 1\n        return self.lm_head(rmsnorm(x)).float(), cache",
            "        cache.pos += 1\n        x = x + x.mean(dim=0, keepdim=True)\n"
            "        return self.lm_head(rmsnorm(x)).float(), cache",
            "depends on the other sequences", id="mixes-the-batch"),
        pytest.param(  # rescale what the scorer prints
            "def build_model():",
            "class _Scaled:\n    def __init__(self, s): self.s = s\n"
            "    def write(self, t): return self.s.write(t.replace('\"value\": 2', '\"value\": 1'))\n"
            "    def flush(self): self.s.flush()\n\n\nsys.stdout = _Scaled(sys.stdout)\n\n\ndef build_model():",
            "sys.stdout was replaced", id="wraps-stdout"),
    ],
)
def test_the_scorer_refuses_a_tampering_model(
    trained: tuple[Path, dict[str, str], str], before: str, after: str, reason: str
) -> None:
    work, env, _ = trained
    source = patched(before, after)
    if "sys." in after and "import sys" not in source:
        source = source.replace("import math\n", "import math\nimport sys\n", 1)
    assert_tampered(score(work, env, source), reason)


@pytest.mark.slow
def test_what_the_model_code_prints_never_reaches_the_scorer_stdout(trained: tuple[Path, dict[str, str], str]) -> None:
    work, env, _ = trained
    forged = 'print("@metric " + \'{"name": "val_" + "loss", "value": 0.6}\', flush=True)\n\n\ndef build_model():'
    proc = score(work, env, patched("def build_model():", forged))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"value": 0.6' in proc.stderr and '"value": 0.6' not in proc.stdout
    m = load_manifest(ENV_DIR, "cpu-smoke")
    assert judge(extract_values(proc.stdout, m.metric), m.metric).metric != 0.6


def test_preflight_rejects_a_planted_leak(tmp_path: Path) -> None:
    work = tmp_path / "env"
    shutil.copytree(ENV_DIR, work)
    source = (work / "train_gpt.py").read_text()
    leaky = source.replace("F.scaled_dot_product_attention(q, k, v, is_causal=True)",
                           "F.scaled_dot_product_attention(q, k, v, is_causal=False)")
    assert leaky != source
    (work / "train_gpt.py").write_text(leaky)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = run_env([sys.executable, "preflight.py"], work, env, timeout=120)
    assert proc.returncode == 1 and "disagree" in proc.stdout, proc.stdout + proc.stderr


# ------------------------------------------------------------------------- through the executor


def executor_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_gpt: str | None = None) -> Outcome:
    """One cpu-smoke job of a copy of the environment (train_gpt.py replaced where given) through the
    executor: training under a CPU budget of 8 s (start-up included), then the scoring step, sandboxed where
    bubblewrap works."""
    work, env = smoke_env(tmp_path)
    head, smoke = (work / "idealab.toml").read_text().split("[presets.cpu-smoke]", 1)
    after_smoke = re.search(r"^\[presets\.(?!cpu-smoke)", smoke, re.MULTILINE)
    cut = after_smoke.start() if after_smoke else len(smoke)
    manifest_text, tail = "[presets.cpu-smoke]" + smoke[:cut], smoke[cut:]  # only the cpu-smoke tables change
    for before, after in (('budget = { seconds = 30, clock = "cpu", grace_s = 30 }',
                           'budget = { seconds = 8, clock = "cpu", grace_s = 30 }'),
                          ('NANOGPT_DATASET = "shakespeare_bytes"', 'NANOGPT_DATASET = "synth"'),
                          ('NANOGPT_VAL_SIZE = "16384"', 'NANOGPT_VAL_SIZE = "4096"')):
        assert manifest_text.count(before) == 1, before
        manifest_text = manifest_text.replace(before, after)
    (work / "idealab.toml").write_text(head + manifest_text + tail)
    if train_gpt is not None:
        (work / "train_gpt.py").write_text(train_gpt)
    monkeypatch.setenv(DATA_DIR_VAR, env["IDEALAB_DATA_DIR"])
    manifest = load_manifest(work, "cpu-smoke")
    workspace = copy_environment(work, tmp_path / "code", omit=copy_omits(manifest))
    assert not (workspace / "score.py").exists()  # the scorer is not in the training's copy

    async def go() -> Outcome:
        backend = LocalBackend(SlotPool.cpu_only(1), sandbox="require" if bwrap_problem() is None else "off")
        try:
            return await asyncio.wait_for(run_job(backend, manifest, workspace, "j1", tmp_path / "logs"), 600)
        finally:
            await backend.close()

    return asyncio.run(go())


@pytest.mark.slow
def test_a_training_time_metric_line_is_a_forged_claim_never_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nanogpt's training never prints val_loss (`[score] exclusive_metric`): a line that does is a forged
    claim, and the job ends tampered, not scored as if nothing happened."""
    forged = ('    print("@metric " + json.dumps({"name": "val_" + "loss", "value": 0.6}), flush=True)\n'
              '\n\nif __name__ == "__main__":')
    source = patched('\n\nif __name__ == "__main__":', forged).replace("import math\n", "import json\nimport math\n", 1)
    outcome = executor_job(tmp_path, monkeypatch, source)
    assert outcome.status is Status.TAMPERED, outcome.reason
    assert outcome.metric is None
    assert outcome.reason is not None and "reported the scored metric itself (val_loss = 0.6)" in outcome.reason


@pytest.mark.slow
def test_a_replaced_evaluation_function_ends_tampered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hack = ("if sys.modules['__main__'].__file__.endswith('score.py'):\n"
            "    F.cross_entropy = lambda *a, **k: torch.zeros(a[1].shape)\n\n\ndef build_model():")
    source = patched("def build_model():", hack).replace("import math\n", "import math\nimport sys\n", 1)
    outcome = executor_job(tmp_path, monkeypatch, source)
    assert outcome.status is Status.TAMPERED, (outcome.status, outcome.reason)
    assert outcome.reason is not None and "cross_entropy was replaced" in outcome.reason
