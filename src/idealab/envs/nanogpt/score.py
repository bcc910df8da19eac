"""The scorer of the nanogpt environment: hidden, protected, run by idealab in a fresh process after training.

    python score.py            (or torchrun --standalone --nproc_per_node=N score.py)

Training (train_gpt.py through harness.save_artefact) leaves model.pt in the job's output directory;
idealab hands that directory to this process as IDEALAB_ARTEFACT_DIR. The scorer
1. binds every function it relies on (torch, numpy, builtins, its own helpers) and loads the validation
   tokens, which only scoring can read (private data), before any editable code runs;
2. imports train_gpt.py (the model code, as the job ran it), builds the model with its `build_model()`
   and loads the trained weights;
3. checks that the model is causal: a sequence's token-by-token loss must not depend on the other sequences
   of its batch (batches of 1, 3 and 8), and the full forward pass should agree with the token-by-token
   pass at several cut points;
4. scores exactly NANOGPT_VAL_SIZE validation tokens token by token (key/value cache), in the order of a
   random permutation of the sequences, so that no sequence sits next to its continuation;
5. checks again that nothing it relies on was replaced, and prints the metric lines.
Whatever the editable code prints goes to stderr; only this file writes to stdout. A replaced function,
a read of the validation data or a frame of this scorer from the editable code prints
`idealab-tampered: <reason>` and exits 3.
"""

import builtins
import glob
import json
import math
import os
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import shards
from shards import load_val_sequences

TAMPERED_EXIT = 3
ARTEFACT = "model.pt"

# The paper's code printed the validation loss of rank 0 only: with 8 ranks reading batches of 32
# sequences in turn (rank r: batches r, r + 8, ...), that is 1/8 of the tokens. Reported beside the mean
# over all tokens (the metric), so that both compare with the paper's numbers.
ORIGINAL_WORLD = 8
ORIGINAL_VAL_BATCH = 32


def _data_root():
    base = os.environ.get("IDEALAB_DATA_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "idealab"
    )
    return os.path.join(base, "nanogpt")


@dataclass(frozen=True)
class ValSettings:
    val_tokens: int  # exactly this many validation targets are scored
    val_seq_len: int  # context length of the validation sequences
    val_batch_seqs: int  # sequences per token-by-token batch on each rank (speed/memory only)
    val_dtype: str  # float32 (the paper's: eager model, no autocast) or bfloat16 (autocast; faster)
    val_glob: str

    @staticmethod
    def from_env(env=os.environ):
        dataset = env.get("NANOGPT_DATASET", "fineweb10B")
        return ValSettings(
            val_tokens=int(env.get("NANOGPT_VAL_SIZE", "10485760")),
            val_seq_len=int(env.get("NANOGPT_SEQ_LEN", "1024")),
            # 512: a float32 key/value cache of 512 sequences x 1024 positions is about 36 GiB (1024: 72)
            val_batch_seqs=int(env.get("NANOGPT_VAL_BATCH_SEQS", "512")),
            val_dtype=env.get("NANOGPT_VAL_DTYPE", "float32"),
            val_glob=env.get("NANOGPT_VAL_GLOB") or os.path.join(_data_root(), dataset, "*_val_*.bin"),
        )


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


# ------------------------------------------------------------------------------ token-by-token evaluation


@torch.no_grad()
def token_losses(model, x, y, autocast):
    """Cross-entropies (N, T) in float64 of (N, T) sequences, feeding one position at a time through
    `model.forward_with_cache(idx (N, 1), cache) -> (logits (N, 1, V), cache)`. Each position gets a fresh
    copy (not a view of x, whose base would hold the later tokens), so the model only ever holds tokens
    up to the current position."""
    cache = None
    losses = torch.zeros(x.size(0), x.size(1), dtype=torch.float64, device=x.device)
    for t in range(x.size(1)):
        with autocast:
            logits, cache = model.forward_with_cache(x[:, t : t + 1].clone(), cache)
        losses[:, t] = F.cross_entropy(logits[:, -1, :].float(), y[:, t], reduction="none").double()
    return losses


def token_by_token_loss(model, x, y, autocast):
    """Per-sequence sums of cross-entropies (N,) (float64) and the token count."""
    return token_losses(model, x, y, autocast).sum(dim=1), y.numel()


@torch.no_grad()
def evaluate(model, settings, device, x_all, y_all, rank=0, world=1, progress=print, order=None):
    """ValLoss over exactly settings.val_tokens targets (this rank's x_all, y_all (N, T)), split over the
    ranks, with the validation numerics of `settings.val_dtype`; sequences are scored in `order`."""
    model.eval()
    autocast = val_numerics(settings, device)
    first_seq = rank * x_all.size(0)  # this rank's first sequence in the whole validation set
    share = in_original_rank0_share(first_seq, x_all.size(0))
    if order is not None:
        x_all, y_all, share = x_all[order], y_all[order], share[order]
    share = share.to(device)
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
            progress(f"validation: batch {b + 1}/{n_batches} on rank 0, {time.perf_counter() - t0:.1f}s")
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    total, share_total, count, share_count = sums.tolist()
    if int(count) != settings.val_tokens:
        raise RuntimeError(f"scored {int(count)} validation tokens, expected {settings.val_tokens}")
    return ValLoss(total / count, share_total / share_count)


# ------------------------------------------------------------------------------------------- causality


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


@torch.no_grad()
def batch_dependence(model, x, y, autocast, sizes=(1, 3)):
    """The largest change of a sequence's mean token-by-token loss when it is scored in a batch of
    `sizes` sequences instead of all of x's: a causal model scores each sequence on its own."""
    model.eval()
    reference = token_losses(model, x, y, autocast).mean(dim=1)
    gap = 0.0
    for n in sizes:
        alone = token_losses(model, x[:n], y[:n], autocast).mean(dim=1)
        gap = max(gap, (alone - reference[:n]).abs().max().item())
    return gap


@torch.no_grad()
def causality_checks(model, x, y, settings, device):
    """(reason the model is not causal, or None; lines to print). x, y: (8, T) validation sequences.
    Batch dependence is tampering (a sequence's score may come from its neighbours); a full forward
    that disagrees with the token-by-token pass at a cut point is reported, as the metric does not use it."""
    autocast = val_numerics(settings, device)
    on_cpu = torch.device(device).type == "cpu"
    rounding = 1e-4 if on_cpu else (0.02 if settings.val_dtype == "bfloat16" else 5e-3)  # bf16 or TF32
    lines = []
    gap = batch_dependence(model, x, y, autocast)
    if not (gap <= rounding):
        return (f"the token-by-token loss of a sequence depends on the other sequences of its batch "
                f"(by {gap:.3g}, more than rounding {rounding:g}): positions see other sequences"), lines
    T = x.size(1)
    tolerance = 2e-5 if on_cpu else 0.02  # rounding of float32/TF32 or bfloat16
    for batch, cut in ((x.size(0), T), (3, T // 3 + 1), (1, T // 2 + 5)):
        cut = min(cut, T)
        xc, yc = x[:batch, :cut].contiguous(), y[:batch, :cut].contiguous()
        ok, full, tbt = check_causality(model, xc, yc, autocast, tolerance)
        verdict = "ok" if ok else "MISMATCH: the full forward pass may let positions see later tokens"
        lines.append(f"causality check ({batch} sequences, {cut} positions): full-forward loss {full:.4f}, "
                     f"token-by-token loss {tbt:.4f}: {verdict}")
    return None, lines


# ------------------------------------------------------------------------------------------- guards


WATCHED = {  # what this scorer calls while (or after) editable code runs; replaced = tampered
    "builtins": (builtins, ("print", "open", "len", "range", "sum", "abs", "min", "max", "float", "int",
                            "isinstance", "getattr", "setattr", "hasattr", "sorted", "enumerate", "zip",
                            "__import__", "__build_class__")),
    "torch": (torch, ("zeros", "stack", "arange", "randperm", "load", "no_grad", "autocast", "from_numpy",
                      "device", "Generator", "manual_seed")),
    "torch.Tensor": (torch.Tensor, ("sum", "mean", "max", "abs", "double", "float", "to", "size", "item",
                                    "tolist", "clone", "new_tensor", "numel", "view", "__getitem__",
                                    "__setitem__", "__iadd__", "__add__", "__sub__", "__truediv__", "__floordiv__",
                                    "__mod__", "__eq__", "__le__")),
    "torch.nn.Module": (nn.Module, ("__call__", "_call_impl", "eval", "train", "to", "load_state_dict",
                                    "parameters", "state_dict")),
    "torch.nn.functional": (F, ("cross_entropy", "log_softmax", "nll_loss")),
    "torch.distributed": (dist, ("all_reduce", "is_available", "is_initialized", "init_process_group",
                                 "destroy_process_group")),
    "numpy": (np, ("concatenate", "memmap", "frombuffer", "asarray", "zeros", "resize")),
    "shards": (shards, ("load_val_sequences", "load_tokens", "read_header", "expand_glob")),
    "glob": (glob, ("glob",)),
    "json": (json, ("dumps",)),
    "math": (math, ("isfinite", "ceil", "sqrt")),
    "os": (os, ("write", "dup", "dup2", "_exit", "environ", "getpid", "path")),
    "sys": (sys, ("exit", "stdout", "stderr", "modules", "path", "audit", "addaudithook")),
    "time": (time, ("perf_counter", "time")),
    "threading": (threading, ("enumerate", "active_count")),
}
MODULES = ("builtins", "torch", "torch.nn", "torch.nn.functional", "torch.distributed", "numpy", "shards",
           "json", "math", "os", "sys", "time", "threading", "glob")


class Guard:
    """Bindings taken before the editable module is imported, compared with what is there later, and an
    audit hook (which Python code cannot remove) that records what the editable code must not do while
    it runs: read the private validation data, inspect the scorer's frames or the heap, start processes
    or connect anywhere."""

    def __init__(self, private_files, editable_files, own):
        self.bound = {(owner, attr): getattr(obj, attr) for owner, (obj, attrs) in WATCHED.items() for attr in attrs}
        self.modules = {name: sys.modules[name] for name in MODULES}
        self.own = dict(own)  # this scorer's module globals
        self.own_names = tuple(name for name, value in own.items() if callable(value))
        self.stdout = sys.stdout
        self.private = frozenset(os.path.realpath(p) for p in private_files)
        self.editable = frozenset(os.path.realpath(p) for p in editable_files)
        self.armed = False
        self.violations = []
        self._inside = False
        sys.addaudithook(self._audit)

    def replaced(self, own):
        """Reasons (a list) for everything that is no longer what was bound."""
        out = [f"{owner}.{attr} was replaced" for (owner, attr), value in self.bound.items()
               if getattr(WATCHED[owner][0], attr, None) is not value]
        out += [f"sys.modules[{name!r}] was replaced" for name, module in self.modules.items()
                if sys.modules.get(name) is not module]
        out += [f"the scorer's {name} was replaced" for name in self.own_names if own.get(name) is not self.own[name]]
        if sys.stdout is not self.stdout:
            out.append("sys.stdout was replaced")
        return out

    def _caller_is_editable(self):
        frame = sys._getframe(2)  # 0: this method, 1: _audit, 2: the code that raised the event
        while frame is not None and os.path.basename(frame.f_code.co_filename) in ("inspect.py", "traceback.py"):
            frame = frame.f_back
        return frame is not None and os.path.realpath(frame.f_code.co_filename) in self.editable

    def _audit(self, event, args):
        if not self.armed or self._inside:
            return
        self._inside = True
        try:
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                path = os.fsdecode(args[0])
                if os.path.realpath(path) in self.private:
                    self.violations.append(f"the editable code opened the validation data ({path})")
            elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork",
                           "socket.connect", "gc.get_objects", "gc.get_referrers", "gc.get_referents"):
                self.violations.append(f"the editable code called {event} while being scored")
            elif event in ("sys._getframe", "sys._current_frames", "object.__getattr__") and self._caller_is_editable():
                what = args[1] if event == "object.__getattr__" and len(args) > 1 else event
                self.violations.append(f"the editable code inspected the scorer's frames ({what})")
        finally:
            self._inside = False


class Output:
    """stdout belongs to the scorer: while editable code runs, fd 1 points at stderr; the scorer's own
    lines go through a private duplicate of the original stdout."""

    def __init__(self):
        sys.stdout.flush()
        self.fd = os.dup(1)
        os.dup2(2, 1)

    def line(self, text):
        os.write(self.fd, (text + "\n").encode())


def tampered(out, reasons):
    out.line("idealab-tampered: " + "; ".join(reasons))
    sys.stderr.flush()
    os._exit(TAMPERED_EXIT)


# ------------------------------------------------------------------------------------------------ main


def load_artefact(path):
    """The state dict and metadata saved by harness.save_artefact; tensors only (no code is unpickled)."""
    if not os.path.isfile(path):
        raise SystemExit(f"no trained model at {path}: training saves it with harness.save_artefact")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise SystemExit(f"{path} is not a nanogpt artefact (a dict with a state_dict)")
    return saved


def main():
    out = Output()
    settings = ValSettings.from_env()
    ddp = int(os.environ.get("RANK", -1)) != -1  # started by torchrun?
    if ddp:
        dist.init_process_group(backend="nccl")
        rank, world = dist.get_rank(), dist.get_world_size()
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
        device = "cuda" if torch.cuda.is_available() else "cpu"
    master = rank == 0
    torch.backends.cuda.matmul.allow_tf32 = True  # the numerics of the former in-process validation, which
    torch.backends.cudnn.allow_tf32 = True  # ran after train_gpt.py had set these for the whole process
    artefact_dir = os.environ.get("IDEALAB_ARTEFACT_DIR") or os.environ.get("IDEALAB_OUTPUT_DIR") or "."
    saved = load_artefact(os.path.join(artefact_dir, ARTEFACT))

    # everything private is read, and everything relied on is bound, before editable code runs
    x_all, y_all = load_val_sequences(settings.val_glob, settings.val_tokens, settings.val_seq_len, rank, world)
    n_check = min(8, x_all.size(0))
    x_check, y_check = x_all[:n_check].to(device), y_all[:n_check].to(device)
    shuffle = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") % (2**63))
    order = torch.randperm(x_all.size(0), generator=shuffle)
    private = shards.expand_glob(settings.val_glob)
    editable = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_gpt.py")]
    guard = Guard(private, editable, globals())
    threads = set(threading.enumerate())

    guard.armed = True
    import train_gpt  # the model code as the job ran it

    model = train_gpt.build_model()
    guard.armed = False
    problems = guard.replaced(globals()) + guard.violations
    if problems:
        tampered(out, problems)
    model.load_state_dict(saved["state_dict"])
    model = model.to(device)

    guard.armed = True
    reason, lines = causality_checks(model, x_check, y_check, settings, device)
    guard.armed = False
    problems = guard.replaced(globals()) + guard.violations + ([reason] if reason else [])
    if problems:
        tampered(out, problems)
    if master:
        for line in lines:
            out.line(line)

    t_val = time.perf_counter()
    guard.armed = True
    val = evaluate(model, settings, device, x_all, y_all, rank, world, progress=print, order=order)
    guard.armed = False
    problems = guard.replaced(globals()) + guard.violations
    if set(threading.enumerate()) - threads:
        problems.append("the editable code started threads")
    if problems:
        tampered(out, problems)
    if master:
        step, train_ms = int(saved.get("step", -1)), float(saved.get("train_time_s", float("nan"))) * 1000
        out.line(f"token-by-token validation of {settings.val_tokens:,} tokens took "
                 f"{time.perf_counter() - t_val:.1f}s ({settings.val_dtype}, {device})")
        out.line(f"step:{step} val_loss:{val.mean:.4f} train_time:{train_ms:.0f}ms "
                 f"(the paper's rank-0 share: {val.rank0_share:.4f})")
        out.line("@metric " + json.dumps({"name": "val_loss", "value": val.mean, "step": step}))
        out.line("@metric " + json.dumps({"name": "val_loss_rank0_share", "value": val.rank0_share, "step": step}))
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
