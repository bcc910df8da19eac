"""The frozen part of the nanogpt environment: run settings, the training-time limit, the final
token-by-token validation, the causality check and the metric line. Read-only for ideas.

Settings come from environment variables that the manifest (and its presets) set; they are read once,
when train_gpt.py imports this module, before any editable code runs.
"""

import json
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from shards import load_val_sequences


def _data_root():
    base = os.environ.get("IDEALAB_DATA_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "idealab"
    )
    return os.path.join(base, "nanogpt")


@dataclass(frozen=True)
class Settings:
    time_limit_s: float  # training stops once this much training time has passed (all ranks together)
    val_tokens: int  # exactly this many validation targets are scored, once, at the end
    val_seq_len: int  # context length of the validation sequences
    val_batch_seqs: int  # sequences per token-by-token batch on each rank (speed/memory only)
    train_glob: str
    val_glob: str
    wandb: bool = False
    wandb_project: str = "idealab-nanogpt"
    wandb_run: str | None = None

    @staticmethod
    def from_env(env=os.environ):
        dataset = env.get("NANOGPT_DATASET", "fineweb10B")
        root = os.path.join(_data_root(), dataset)
        return Settings(
            time_limit_s=float(env.get("NANOGPT_TIME_LIMIT_S", "1500")),
            val_tokens=int(env.get("NANOGPT_VAL_SIZE", "10485760")),
            val_seq_len=int(env.get("NANOGPT_SEQ_LEN", "1024")),
            val_batch_seqs=int(env.get("NANOGPT_VAL_BATCH_SEQS", "1024")),
            train_glob=env.get("NANOGPT_TRAIN_GLOB") or os.path.join(root, "*_train_*.bin"),
            val_glob=env.get("NANOGPT_VAL_GLOB") or os.path.join(root, "*_val_*.bin"),
            wandb=env.get("NANOGPT_WANDB", "0").lower() in ("1", "true", "yes", "on"),
            wandb_project=env.get("NANOGPT_WANDB_PROJECT", "idealab-nanogpt"),
            wandb_run=env.get("NANOGPT_WANDB_RUN") or None,
        )


SETTINGS = Settings.from_env()


class TrainClock:
    """Training time, measured from start() with the device synchronised; the stop decision is
    all-reduced so that every rank leaves the loop at the same step."""

    def __init__(self, device, limit_s):
        self.device, self.limit_s = torch.device(device), limit_s
        self.t0 = None

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self):
        self._sync()
        self.t0 = time.perf_counter()

    def elapsed_s(self):
        self._sync()
        return time.perf_counter() - self.t0

    def should_stop(self):
        over = torch.tensor([1.0 if self.elapsed_s() >= self.limit_s else 0.0], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(over, op=dist.ReduceOp.MAX)
        return bool(over.item() > 0)


# ------------------------------------------------------------------------------ token-by-token evaluation


@torch.no_grad()
def token_by_token_loss(model, x, y, autocast):
    """Sum of cross-entropies and count over (N, T) sequences, feeding one position at a time through
    `model.forward_with_cache(idx (N, 1), cache) -> (logits (N, 1, V), cache)`. The model only ever holds
    tokens up to the current position, so no change to it can let a position see a later token."""
    cache = None
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for t in range(x.size(1)):
        with autocast:
            logits, cache = model.forward_with_cache(x[:, t : t + 1], cache)
        total += F.cross_entropy(logits[:, -1, :].float(), y[:, t], reduction="sum").double()
    return total, y.numel()


@torch.no_grad()
def evaluate(model, settings, device, autocast, rank=0, world=1):
    """Mean validation loss over exactly settings.val_tokens targets, split over the ranks."""
    model.eval()
    x_all, y_all = load_val_sequences(settings.val_glob, settings.val_tokens, settings.val_seq_len, rank, world)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    n_batches = math.ceil(x_all.size(0) / settings.val_batch_seqs)
    size = math.ceil(x_all.size(0) / n_batches)  # equal batches of at most val_batch_seqs sequences
    t0 = time.perf_counter()
    for b, i in enumerate(range(0, x_all.size(0), size)):
        x = x_all[i : i + size].to(device, non_blocking=True)
        y = y_all[i : i + size].to(device, non_blocking=True)
        batch_total, batch_count = token_by_token_loss(model, x, y, autocast)
        total += batch_total
        count += batch_count
        if rank == 0 and (b + 1) % max(1, n_batches // 10) == 0:
            print(f"validation: batch {b + 1}/{n_batches} on rank 0, {time.perf_counter() - t0:.1f}s", flush=True)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        dist.all_reduce(count)
    if int(count.item()) != settings.val_tokens:
        raise RuntimeError(f"scored {int(count.item())} validation tokens, expected {settings.val_tokens}")
    return (total / count).item()


@torch.no_grad()
def causality_gap(model, x, y, autocast):
    """(full-forward loss, token-by-token loss) on the same sequences. They agree up to rounding for a
    causal model; a position that sees later tokens makes the full forward's loss lower."""
    model.eval()
    with autocast:
        _, full = model(x, y)
    tbt, n = token_by_token_loss(model, x, y, autocast)
    return float(full.float().item()), float((tbt / n).item())


def check_causality(model, x, y, autocast, tolerance):
    full, tbt = causality_gap(model, x, y, autocast)
    ok = math.isfinite(full) and math.isfinite(tbt) and abs(full - tbt) <= tolerance
    return ok, full, tbt


def causality_report(model, settings, device, autocast, rank=0, world=1, num_seqs=4):
    """Print (rank 0) whether the full forward pass and the token-by-token pass agree on a few validation
    sequences. Informational: the metric is the token-by-token loss, which cannot see later tokens."""
    if rank != 0:
        return None
    T = settings.val_seq_len
    x, y = load_val_sequences(settings.val_glob, num_seqs * T, T)
    tolerance = 2e-5 if torch.device(device).type == "cpu" else 0.02  # float32 vs bfloat16 rounding
    ok, full, tbt = check_causality(model, x.to(device), y.to(device), autocast, tolerance)
    verdict = "ok" if ok else "MISMATCH: the full forward pass may let positions see later tokens"
    print(f"causality check: full-forward loss {full:.4f}, token-by-token loss {tbt:.4f}: {verdict}", flush=True)
    return ok


# ------------------------------------------------------------------------------------------ reporting


def report(step, val_loss, train_time_s):
    """The final lines: a human-readable summary and the `@metric` line that idealab reads."""
    print(f"step:{step} val_loss:{val_loss:.4f} train_time:{train_time_s * 1000:.0f}ms", flush=True)
    print("@metric " + json.dumps({"name": "val_loss", "value": val_loss, "step": step}), flush=True)


class RunLogger:
    """Per-step series to stdout (every `every` steps) and, when enabled, to Weights & Biases."""

    def __init__(self, settings, config, enabled=True, every=10):
        self.enabled, self.every, self.run = enabled, every, None
        if enabled and settings.wandb:
            import wandb  # optional dependency, only with NANOGPT_WANDB=1

            self.run = wandb.init(project=settings.wandb_project, name=settings.wandb_run, config=config)

    def step(self, step, train_loss, grad_norm, lr, tokens_per_s, step_time_s):
        if not self.enabled:
            return
        if self.run is not None:
            self.run.log(
                {"train_loss": train_loss, "grad_norm": grad_norm, "lr": lr, "tokens_per_s": tokens_per_s,
                 "step_time_ms": step_time_s * 1000},
                step=step,
            )
        if step % self.every == 0 or step < 10:
            print(
                f"step:{step} train_loss:{train_loss:.4f} grad_norm:{grad_norm:.3f} lr:{lr:.3e} "
                f"tok/s:{tokens_per_s:,.0f} step_time:{step_time_s * 1000:.1f}ms",
                flush=True,
            )

    def final(self, step, val_loss, train_time_s):
        if self.enabled and self.run is not None:
            self.run.log({"val_loss": val_loss, "train_time_s": train_time_s}, step=step)
            self.run.finish()
