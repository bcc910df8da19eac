"""Cheap CPU checks of a changed train_gpt.py before a GPU job is spent on it (exit 1 with the reason):

1. causality: a tiny model of the changed code is trained for a few steps on random tokens, then its
   full-forward loss must equal its token-by-token (KV cache) loss; a position that sees later tokens
   learns to copy them, and the two losses part;
2. smoke run: the changed training script runs end to end (a few seconds of training, then the scorer on
   the saved model: a small token-by-token validation) on synthetic shards, single process, CPU only.
"""

import contextlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from score import check_causality
from shards import write_shard

HERE = os.path.dirname(os.path.abspath(__file__))


def causality(steps=25, seq_len=64, batch=8, tolerance=1e-5, logit_tolerance=1e-3):
    import train_gpt as tg

    if "tiny" not in tg.MODEL_CONFIGS:
        return "train_gpt.MODEL_CONFIGS has no 'tiny' configuration (the checks need it)"
    torch.manual_seed(0)
    model = tg.GPT(tg.MODEL_CONFIGS["tiny"])
    vocab = tg.MODEL_CONFIGS["tiny"].vocab_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        tokens = torch.randint(0, vocab, (batch, seq_len + 1))
        _, loss = model(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tokens = torch.randint(0, vocab, (batch, seq_len + 1))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    ok, full, tbt = check_causality(model, x, y, contextlib.nullcontext(), tolerance)
    with torch.no_grad():  # per-position logits are a more sensitive test than the mean loss
        logits, _ = model(x, y)
        cache, steps = None, []
        for t in range(x.size(1)):
            step_logits, cache = model.forward_with_cache(x[:, t : t + 1], cache)
            steps.append(step_logits)
        logit_gap = (torch.cat(steps, dim=1) - logits).abs().max().item()
    print(f"causality: full-forward loss {full:.6f}, token-by-token loss {tbt:.6f}, max logit gap {logit_gap:.2e}")
    if not ok or not logit_gap <= logit_tolerance:
        return (f"the full forward pass (loss {full:.6f}) and the token-by-token pass (loss {tbt:.6f}, "
                f"max logit difference {logit_gap:.2e}) disagree: a position may see later tokens, "
                "or forward_with_cache no longer computes what forward computes")
    return None


def smoke_run(timeout_s=240):
    with tempfile.TemporaryDirectory(prefix="nanogpt-preflight-") as tmp:
        rng = np.random.default_rng(0)
        write_shard(os.path.join(tmp, "synth_val_000000.bin"), rng.integers(0, 256, 20_000))
        write_shard(os.path.join(tmp, "synth_train_000001.bin"), rng.integers(0, 256, 200_000))
        out = os.path.join(tmp, "out")
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", NANOGPT_MODEL="tiny",
                   NANOGPT_TRAIN_GLOB=os.path.join(tmp, "*_train_*.bin"),
                   NANOGPT_VAL_GLOB=os.path.join(tmp, "*_val_*.bin"),
                   NANOGPT_SEQ_LEN="64", NANOGPT_DEVICE_BATCH="4", NANOGPT_GLOBAL_BATCH="512",
                   NANOGPT_NUM_ITERATIONS="100", IDEALAB_BUDGET_S="5", NANOGPT_VAL_SIZE="2048",
                   NANOGPT_WANDB="0", IDEALAB_OUTPUT_DIR=out, IDEALAB_ARTEFACT_DIR=out)
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(var, None)
        for what, script in (("training script", "train_gpt.py"), ("scorer", "score.py")):
            proc = subprocess.run([sys.executable, script], cwd=HERE, env=env, capture_output=True,
                                  text=True, timeout=timeout_s)
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            if proc.returncode != 0:
                return f"the {what} failed on a tiny CPU run (exit {proc.returncode}):\n{tail}"
    if "@metric " not in proc.stdout:
        return f"the scorer finished without printing the metric line:\n{tail}"
    if "MISMATCH" in proc.stdout:
        return f"the scorer's causality check failed:\n{tail}"
    print("smoke run: ok")
    return None


def main():
    for check in (causality, smoke_run):
        problem = check()
        if problem:
            print(f"preflight failed: {problem}")
            return 1
    print("preflight ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
