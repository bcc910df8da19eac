"""nanogpt validation numerics, side by side on one checkpoint (GPU evidence for docs/BENCHMARKS.md).

Trains the d12 model briefly (the `1gpu` settings: micro-batch 32 x 1024, 8 accumulation steps, bf16
autocast, torch.compile) on byte-level shards made from the Python sources installed on the machine, then
scores the same validation sequences token by token twice per batch of 1024 sequences: in float32 without
autocast (the paper's numerics, the default) and under bf16 autocast (idealab's former default). It prints
for each: the mean over all tokens scored (the metric), the mean over the paper's rank-0 share (every 8th
group of 32 sequences: what the paper's code printed), and the time per token. Batches run until all
10,485,760 tokens are scored or --deadline-s (from the start) is reached; the coverage is printed.

    python benchmarks/nanogpt_val_numerics.py [--train-s 60] [--deadline-s 560] [--model d12]

The data is code, not FineWeb: the size of the gaps transfers only roughly (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ENV_DIR = Path(__file__).resolve().parents[1] / "src" / "idealab" / "envs" / "nanogpt"
sys.path.insert(0, str(ENV_DIR))

import score  # noqa: E402  (the environment's hidden scorer: the validation code)
import shards  # noqa: E402
import train_gpt  # noqa: E402

VAL_TOKENS = 10_485_760
TRAIN_BYTES = 64_000_000  # more than a minute of training reads
SEQ = 1024


def source_bytes() -> tuple[bytes, bytes]:
    """(validation, training) text: the machine's installed .py files, split by a hash of their path."""
    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]}
    files = sorted(p for root in roots for p in Path(root).rglob("*.py") if p.is_file())
    val, train = bytearray(), bytearray()
    for path in files:
        to_val = hashlib.sha256(str(path).encode()).digest()[0] < 64 and len(val) <= VAL_TOKENS
        if not to_val and len(train) > TRAIN_BYTES:
            continue
        (val if to_val else train).extend(path.read_bytes() + b"\n")
    return bytes(val), bytes(train)


def make_shards(directory: Path, val_tokens: int) -> tuple[str, str]:
    val, train = source_bytes()
    if len(val) < val_tokens + 1:
        sys.exit(f"only {len(val):,} validation bytes of Python source on this machine; {val_tokens + 1:,} needed")
    shards.write_shard(str(directory / "code_val_000000.bin"), np.frombuffer(val[: val_tokens + 1], np.uint8))
    shards.write_shard(str(directory / "code_train_000001.bin"), np.frombuffer(train, np.uint8))
    print(f"shards: {val_tokens + 1:,} validation and {len(train):,} training bytes of Python source", flush=True)
    return str(directory / "code_train_*.bin"), str(directory / "code_val_*.bin")


def train(model_name: str, train_glob: str, seconds: float, device: str) -> torch.nn.Module:
    on_gpu = device.startswith("cuda")
    torch.manual_seed(train_gpt.SEED)
    model = train_gpt.GPT(train_gpt.MODEL_CONFIGS[model_name]).to(device)
    compiled = torch.compile(model) if on_gpu else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_gpt.LEARNING_RATE, betas=(0.9, 0.95),
                                  weight_decay=0.1, fused=on_gpu)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else torch.autocast("cpu", enabled=False)
    batch, accum = (32, 8) if on_gpu else (4, 1)
    seq = SEQ if on_gpu else 64
    loader = shards.DistributedDataLoader(train_glob, batch, seq)
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(accum):
            x, y = (t.to(device) for t in loader.next_batch())
            with autocast:
                _, loss = compiled(x, y, return_logits=False)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = train_gpt.get_lr(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % 20 == 0:
            print(f"train step {step}: loss {loss.item():.4f} at {time.perf_counter() - t0:.0f}s", flush=True)
    print(f"trained {step} steps in {time.perf_counter() - t0:.0f}s; last loss {loss.item():.4f}", flush=True)
    return model


def settings_for(dtype: str, val_glob: str, val_tokens: int, seq: int) -> score.ValSettings:
    return score.ValSettings.from_env({"NANOGPT_VAL_DTYPE": dtype, "NANOGPT_VAL_GLOB": val_glob,
                                      "NANOGPT_VAL_SIZE": str(val_tokens), "NANOGPT_SEQ_LEN": str(seq)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="d12")
    parser.add_argument("--train-s", type=float, default=60)
    parser.add_argument("--deadline-s", type=float, default=560)
    parser.add_argument("--val-tokens", type=int, default=VAL_TOKENS)
    parser.add_argument("--batch-seqs", type=int, default=1024)
    args = parser.parse_args()
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True  # as train_gpt.py sets for the whole process
    torch.backends.cudnn.allow_tf32 = True
    if device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    seq = SEQ if device == "cuda" else 64
    with tempfile.TemporaryDirectory() as tmp:
        train_glob, val_glob = make_shards(Path(tmp), args.val_tokens)
        model = train(args.model, train_glob, args.train_s, device).eval()
        x_all, y_all = shards.load_val_sequences(val_glob, args.val_tokens, seq)
    share = score.in_original_rank0_share(0, x_all.size(0))
    kinds = ("float32", "bfloat16")
    totals = {k: torch.zeros(x_all.size(0), dtype=torch.float64) for k in kinds}
    seconds = dict.fromkeys(kinds, 0.0)
    done = 0
    n_batches = math.ceil(x_all.size(0) / args.batch_seqs)
    for b in range(n_batches):
        if b > 0 and time.perf_counter() - start + sum(seconds.values()) / b * 1.2 > args.deadline_s:
            print(f"deadline: stopping after {b} of {n_batches} batches", flush=True)
            break
        rows = slice(b * args.batch_seqs, (b + 1) * args.batch_seqs)
        x, y = x_all[rows].to(device), y_all[rows].to(device)
        for kind in kinds:
            numerics = score.val_numerics(settings_for(kind, val_glob, args.val_tokens, seq), device)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            seq_totals, _ = score.token_by_token_loss(model, x, y, numerics)
            totals[kind][rows] = seq_totals.cpu()
            seconds[kind] += time.perf_counter() - t0
        done = rows.stop if rows.stop < x_all.size(0) else x_all.size(0)
        print(f"batch {b + 1}/{n_batches}: float32 {seconds['float32']:.1f}s, bf16 {seconds['bfloat16']:.1f}s "
              f"so far", flush=True)
    scored, in_share = slice(0, done), share[:done]
    tokens, share_tokens = done * seq, int(in_share.sum()) * seq
    print(f"\nscored {tokens:,} of {args.val_tokens:,} tokens ({tokens / args.val_tokens:.0%}); "
          f"the paper's rank-0 share of them: {share_tokens:,} tokens")
    print(f"{'numerics':<24}{'all tokens':>12}{'rank-0 share':>14}{'share - all':>13}{'s per 1M tok':>14}")
    means = {}
    for kind in kinds:
        t = totals[kind][scored]
        means[kind] = (t.sum().item() / tokens, t[in_share].sum().item() / share_tokens)
        label = "float32 (paper, default)" if kind == "float32" else "bf16 autocast"
        print(f"{label:<24}{means[kind][0]:>12.5f}{means[kind][1]:>14.5f}{means[kind][1] - means[kind][0]:>+13.5f}"
              f"{seconds[kind] / tokens * 1e6:>14.2f}")
    print(f"bf16 - float32: all tokens {means['bfloat16'][0] - means['float32'][0]:+.5f}, "
          f"rank-0 share {means['bfloat16'][1] - means['float32'][1]:+.5f}; "
          f"float32 / bf16 time: {seconds['float32'] / seconds['bfloat16']:.2f}x; "
          f"full 10,485,760 tokens extrapolated: float32 {seconds['float32'] / tokens * VAL_TOKENS:.0f}s, "
          f"bf16 {seconds['bfloat16'] / tokens * VAL_TOKENS:.0f}s")
    print(f"total wall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
