"""The frozen part of the nanogpt environment: run settings, the training-time limit, the final
token-by-token validation, the causality check and the metric line. Read-only for ideas.

Settings come from environment variables that the manifest (and its presets) set; they are read once,
when train_gpt.py imports this module, before any editable code runs.
"""

import json
import math
import os
import time
from contextlib import nullcontext
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
    val_dtype: str  # float32 (the paper's: eager model, no autocast) or bfloat16 (autocast; faster)
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
            # 512: a float32 key/value cache of 512 sequences x 1024 positions is about 36 GiB (1024: 72)
            val_batch_seqs=int(env.get("NANOGPT_VAL_BATCH_SEQS", "512")),
            val_dtype=env.get("NANOGPT_VAL_DTYPE", "float32"),
            train_glob=env.get("NANOGPT_TRAIN_GLOB") or os.path.join(root, "*_train_*.bin"),
            val_glob=env.get("NANOGPT_VAL_GLOB") or os.path.join(root, "*_val_*.bin"),
            wandb=env.get("NANOGPT_WANDB", "0").lower() in ("1", "true", "yes", "on"),
            wandb_project=env.get("NANOGPT_WANDB_PROJECT", "idealab-nanogpt"),
            wandb_run=env.get("NANOGPT_WANDB_RUN") or None,
        )


SETTINGS = Settings.from_env()
# The job's seed: idealab sets IDEALAB_SEED, a different one for each run (repeats of the baseline,
# confirmation runs of an idea). It lives here, in the fixed part, so an idea cannot pin a lucky seed.
SEED = int(os.environ.get("IDEALAB_SEED", "1337"))

# The paper's code printed the validation loss of rank 0 only: with 8 ranks reading batches of 32
# sequences in turn (rank r: batches r, r + 8, ...), that is 1/8 of the tokens. Reported beside the mean
# over all tokens (the metric), so that both compare with the paper's numbers.
ORIGINAL_WORLD = 8
ORIGINAL_VAL_BATCH = 32


def val_numerics(settings, device):
    """The autocast context of validation: none for float32, bf16 autocast on CUDA for bfloat16."""
    if settings.val_dtype == "float32" or torch.device(device).type != "cuda":
        return nullcontext()
    if settings.val_dtype == "bfloat16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    raise ValueError(f"NANOGPT_VAL_DTYPE={settings.val_dtype!r}: choose float32 or bfloat16")


def in_original_rank0_share(first_seq, n):
    """(n,) bool: which of the global validation sequences first_seq .. first_seq + n - 1 the paper's rank 0
    scored."""
    index = torch.arange(first_seq, first_seq + n)
    return (index // ORIGINAL_VAL_BATCH) % ORIGINAL_WORLD == 0


@dataclass(frozen=True)
class ValLoss:
    mean: float  # over all validation tokens: the metric
    rank0_share: float  # over the paper's rank-0 share of them (what the paper's code printed)


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
    """Per-sequence sums of cross-entropies (N,) (float64) over (N, T) sequences, and the token count,
    feeding one position at a time through `model.forward_with_cache(idx (N, 1), cache) -> (logits (N, 1, V),
    cache)`. The model only ever holds tokens up to the current position, so no change to it can let a
    position see a later token."""
    cache = None
    totals = torch.zeros(x.size(0), dtype=torch.float64, device=x.device)
    for t in range(x.size(1)):
        with autocast:
            logits, cache = model.forward_with_cache(x[:, t : t + 1], cache)
        totals += F.cross_entropy(logits[:, -1, :].float(), y[:, t], reduction="none").double()
    return totals, y.numel()


@torch.no_grad()
def evaluate(model, settings, device, rank=0, world=1):
    """ValLoss over exactly settings.val_tokens targets, split over the ranks, with the validation
    numerics of `settings.val_dtype`."""
    model.eval()
    autocast = val_numerics(settings, device)
    x_all, y_all = load_val_sequences(settings.val_glob, settings.val_tokens, settings.val_seq_len, rank, world)
    first_seq = rank * x_all.size(0)  # this rank's first sequence in the whole validation set
    share = in_original_rank0_share(first_seq, x_all.size(0)).to(device)
    # sums and counts: [all tokens, tokens of the paper's rank-0 share]
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    n_batches = math.ceil(x_all.size(0) / settings.val_batch_seqs)
    size = math.ceil(x_all.size(0) / n_batches)  # equal batches of at most val_batch_seqs sequences
    t0 = time.perf_counter()
    for b, i in enumerate(range(0, x_all.size(0), size)):
        x = x_all[i : i + size].to(device, non_blocking=True)
        y = y_all[i : i + size].to(device, non_blocking=True)
        seq_totals, count = token_by_token_loss(model, x, y, autocast)
        in_share = share[i : i + size]
        sums += torch.stack([seq_totals.sum(), seq_totals[in_share].sum(),
                             seq_totals.new_tensor(count), seq_totals.new_tensor(in_share.sum().item() * y.size(1))])
        if rank == 0 and (b + 1) % max(1, n_batches // 10) == 0:
            print(f"validation: batch {b + 1}/{n_batches} on rank 0, {time.perf_counter() - t0:.1f}s", flush=True)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    total, share_total, count, share_count = sums.tolist()
    if int(count) != settings.val_tokens:
        raise RuntimeError(f"scored {int(count)} validation tokens, expected {settings.val_tokens}")
    return ValLoss(total / count, share_total / share_count)


@torch.no_grad()
def causality_gap(model, x, y, autocast):
    """(full-forward loss, token-by-token loss) on the same sequences. They agree up to rounding for a
    causal model; a position that sees later tokens makes the full forward's loss lower."""
    model.eval()
    with autocast:
        _, full = model(x, y)
    tbt, n = token_by_token_loss(model, x, y, autocast)
    return float(full.float().item()), float((tbt.sum() / n).item())


def check_causality(model, x, y, autocast, tolerance):
    full, tbt = causality_gap(model, x, y, autocast)
    ok = math.isfinite(full) and math.isfinite(tbt) and abs(full - tbt) <= tolerance
    return ok, full, tbt


def causality_report(model, settings, device, rank=0, world=1, num_seqs=4):
    """Print (rank 0) whether the full forward pass and the token-by-token pass agree on a few validation
    sequences, in the validation numerics. Informational: the metric is the token-by-token loss, which
    cannot see later tokens."""
    if rank != 0:
        return None
    T = settings.val_seq_len
    x, y = load_val_sequences(settings.val_glob, num_seqs * T, T)
    tolerance = 2e-5 if torch.device(device).type == "cpu" else 0.02  # rounding of float32/TF32 or bfloat16
    ok, full, tbt = check_causality(model, x.to(device), y.to(device), val_numerics(settings, device), tolerance)
    verdict = "ok" if ok else "MISMATCH: the full forward pass may let positions see later tokens"
    print(f"causality check: full-forward loss {full:.4f}, token-by-token loss {tbt:.4f}: {verdict}", flush=True)
    return ok


# ------------------------------------------------------------------------------------------ reporting


def report(step, val, train_time_s):
    """The final lines: a human-readable summary and the `@metric` lines that idealab reads (val_loss is the
    metric; val_loss_rank0_share is what the paper's code printed, for comparison)."""
    print(f"step:{step} val_loss:{val.mean:.4f} train_time:{train_time_s * 1000:.0f}ms "
          f"(the paper's rank-0 share: {val.rank0_share:.4f})", flush=True)
    print("@metric " + json.dumps({"name": "val_loss", "value": val.mean, "step": step}), flush=True)
    print("@metric " + json.dumps({"name": "val_loss_rank0_share", "value": val.rank0_share, "step": step}),
          flush=True)


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

    def final(self, step, val, train_time_s):
        if self.enabled and self.run is not None:
            self.run.log({"val_loss": val.mean, "val_loss_rank0_share": val.rank0_share,
                          "train_time_s": train_time_s}, step=step)
            self.run.finish()
