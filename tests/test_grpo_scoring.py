"""The GRPO environment's side of the scoring contract: training saves the policy snapshots that the
paper's evaluation schedule sees, the budget's SIGUSR1 ends training with them, and the hidden scorer
evaluates each with its own sampling code in a fresh process (real subprocesses, a tiny model)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from idealab.manifest import load_manifest
from idealab.metrics import extract_values, judge
from test_grpo_util import ENV_DIR, load_env_modules


@pytest.fixture(scope="module")
def env():  # type: ignore[no-untyped-def]
    return load_env_modules(ENV_DIR)


class Policy:
    """Stands in for a transformers model: save_pretrained writes how many updates it has had."""

    def __init__(self) -> None:
        self.updates = 0

    def save_pretrained(self, path: str, safe_serialization: bool = True) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "updates").write_text(str(self.updates))


def updates_seen(out: Path) -> dict[str, int]:
    return {p.name: int((p / "updates").read_text()) for p in sorted(out.iterdir())}


def test_snapshots_hold_the_weights_the_papers_evaluations_see(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # evaluation at the start of steps 0, 2, ..., 18, with the weights taken at the start of the previous
    # step: the policy after 0, 1, 3, ..., 17 updates; the policy after the last update never
    snapshots, policy = env.harness.PolicySnapshots(20, out_dir=str(tmp_path)), Policy()
    for step in range(20):
        snapshots.at_step_start(step, policy)
        policy.updates += 1  # this step's training
    expected = {f"policy-step{s:04d}": max(s - 1, 0) for s in range(0, 20, 2)}
    assert updates_seen(tmp_path) == expected
    assert [s for s, _ in env.evaluate.snapshots(str(tmp_path))] == list(range(0, 20, 2))


def test_a_run_stopped_early_keeps_only_the_evaluations_it_reached(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    snapshots, policy = env.harness.PolicySnapshots(20, out_dir=str(tmp_path)), Policy()
    for step in range(6):  # stopped during step 5: the weights for step 6's evaluation are saved, not counted
        snapshots.at_step_start(step, policy)
        policy.updates += 1
    assert "pending-policy-step0006" in updates_seen(tmp_path)
    assert [s for s, _ in env.evaluate.snapshots(str(tmp_path))] == [0, 2, 4]


def test_sigusr1_ends_training_with_the_snapshots_saved(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from harness import PolicySnapshots\n"
        f"snapshots = PolicySnapshots(20, out_dir={str(tmp_path / 'out')!r})\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "print('still training')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ENV_DIR, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "budget is spent" in proc.stdout and "still training" not in proc.stdout


def bytelevel_tokenizer():  # type: ignore[no-untyped-def]
    """A real byte-level BPE tokenizer trained here on a few strings (stop strings need one; no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(["</think> <answer>1</answer>", "a b c d 2"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def tiny_base(root: Path, hidden: int = 16):  # type: ignore[no-untyped-def]
    """A tiny Llama and its tokenizer (to be saved as the environment's model directory)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bytelevel_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    return model, tok


def scoring_setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    data = tmp_path / "data" / "grpo"
    model, tok = tiny_base(data)
    model.save_pretrained(data / "models" / "tiny")
    tok.save_pretrained(data / "models" / "tiny")
    (data / "prompts").mkdir(parents=True)
    (data / "prompts" / "r1_zero.prompt").write_text("a {question}")
    (data / "arith").mkdir()
    rows = [{"problem": "b c", "answer": "1"}, {"problem": "d", "answer": "2"}]
    (data / "arith" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "scoring"
    shutil.copytree(ENV_DIR, work, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "IDEALAB_DATA_DIR": str(tmp_path / "data"), "GRPO_MODEL": "tiny",
           "GRPO_EVAL_SET": "arith/test.jsonl", "GRPO_EVAL_MAX_LEN": "4", "CUDA_VISIBLE_DEVICES": "",
           "IDEALAB_ARTEFACT_DIR": str(tmp_path / "artefact"), "HF_HUB_OFFLINE": "1", "IDEALAB_SEED": "1"}
    env.pop("GRPO_DATA_DIR", None)
    return work, env


@pytest.mark.slow
def test_the_scorer_samples_every_snapshot_and_reports_each(tmp_path: Path) -> None:
    work, env = scoring_setup(tmp_path)
    model, _ = tiny_base(tmp_path)
    for step in (0, 2):
        model.save_pretrained(tmp_path / "artefact" / f"policy-step{step:04d}")
    (tmp_path / "artefact" / "pending-policy-step0004").mkdir()  # a run stopped before step 4: not scored
    proc = subprocess.run([sys.executable, "evaluate.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = load_manifest(ENV_DIR, "cpu-smoke").metric
    values = extract_values(proc.stdout, spec)
    assert sorted(v.step for v in values if v.name == "eval_accuracy") == [0, 2]
    assert judge(values, spec).ok


@pytest.mark.slow
def test_a_snapshot_of_another_architecture_is_tampering(tmp_path: Path) -> None:
    work, env = scoring_setup(tmp_path)
    bigger, _ = tiny_base(tmp_path, hidden=32)
    bigger.save_pretrained(tmp_path / "artefact" / "policy-step0000")
    proc = subprocess.run([sys.executable, "evaluate.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 3 and "idealab-tampered: " in proc.stdout and "@metric" not in proc.stdout, proc.stdout


@pytest.mark.slow
def test_extra_snapshots_off_the_schedule_are_tampering(tmp_path: Path) -> None:
    # 30 copies of one policy would give the maximum of 30 noisy evaluations instead of the schedule's
    work, env = scoring_setup(tmp_path)
    model, _ = tiny_base(tmp_path)
    for step in (0, 1, 3):
        model.save_pretrained(tmp_path / "artefact" / f"policy-step{step:04d}")
    proc = subprocess.run([sys.executable, "evaluate.py"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 3 and "steps [1, 3]" in proc.stdout and "@metric" not in proc.stdout, proc.stdout
