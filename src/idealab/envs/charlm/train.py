"""
charlm: a small character-level GPT trained on Shakespeare for a fixed CPU time budget (nanoGPT-style).

This is the file ideas change. prepare.py (data, time budget, threads, seed, evaluation context) is
read-only and the scoring is hidden, in a process of its own after training. What the scoring relies on,
which every change must keep:
  - `build_model()` (module level) returns the model, built from the hyperparameters below; the scoring
    imports this file (so nothing may run at import time but definitions: training stays under
    `if __name__ == "__main__":`), calls build_model() and loads the state dict training saved;
  - `model(idx)` takes a LongTensor of character ids of shape (B, T) with T up to prepare.EVAL_CONTEXT
    (64) and returns float logits of shape (B, T, vocab_size); logits[:, t] predict character t + 1;
  - logits[:, t] depend only on idx[:, :t + 1]: no position may see later characters (this is checked);
  - training stops once prepare.out_of_time() (the CPU-time budget, which the executor enforces);
    then `save_artefact(model)` saves the model for the scoring.
"""

import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import (
    EVAL_CONTEXT,
    SEED,
    TIME_BUDGET_S,
    get_batch,
    load_shakespeare,
    load_vocab,
    out_of_time,
    save_artefact,
    training_time,
)

# -----------------------------------------------------------------------------
# hyperparameters
LEARNING_RATE = 3e-3  # peak AdamW learning rate
MIN_LR_FRAC = 0.1  # the learning rate decays to LEARNING_RATE * MIN_LR_FRAC by the end of the budget
WARMUP_ITERS = 20  # linear warmup, in optimiser steps
WEIGHT_DECAY = 0.1  # decoupled weight decay on matrices (not on norms or biases)
BETA1 = 0.9
BETA2 = 0.99  # a short run on small batches: a shorter second-moment memory than the usual 0.999
GRAD_CLIP = 1.0  # max global gradient norm; 0 disables clipping
BATCH_SIZE = 32  # sequences per step
BLOCK_SIZE = 64  # training context in characters (the evaluation always uses EVAL_CONTEXT = 64)
N_LAYER = 2
N_HEAD = 4
HEAD_SIZE = 32  # width per head; the model width is N_HEAD * HEAD_SIZE, so it always divides evenly
DROPOUT = 0.0
LOG_EVERY = 50  # steps between progress lines
# -----------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd, dropout):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, context, n_layer, n_head, head_size, dropout):
        super().__init__()
        n_embd = n_head * head_size
        self.context = context
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(context, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input/output embeddings
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream stays O(1)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx):
        B, T = idx.shape
        assert T <= self.context, f"sequence of {T} characters, the model's context is {self.context}"
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, n_embd)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab_size)


def build_model():
    """The model to train and to score: positions up to EVAL_CONTEXT must exist for the evaluation,
    whatever the training context."""
    vocab_size = len(load_vocab())
    return GPT(vocab_size, max(BLOCK_SIZE, EVAL_CONTEXT), N_LAYER, N_HEAD, HEAD_SIZE, DROPOUT)


def get_lr(step, progress):
    """Linear warmup over WARMUP_ITERS steps, then cosine decay over the fraction of the budget spent."""
    if step < WARMUP_ITERS:
        return LEARNING_RATE * (step + 1) / WARMUP_ITERS
    min_lr = LEARNING_RATE * MIN_LR_FRAC
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (LEARNING_RATE - min_lr)


def train():
    data = load_shakespeare()
    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"charlm: {n_params / 1e6:.2f}M parameters, vocab {data.vocab_size}, budget {TIME_BUDGET_S:g}s")

    # weight decay on matrices and embeddings only; norms and biases are left alone
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LEARNING_RATE,
        betas=(BETA1, BETA2),
    )
    batches = torch.Generator().manual_seed(SEED)

    model.train()
    step = 0
    # the budget counts the whole process (start-up included); the schedule spans what is left of it
    t0, wall0 = training_time(), time.perf_counter()
    span = max(TIME_BUDGET_S - t0, 1e-6)
    while not out_of_time():
        elapsed = training_time() - t0
        lr = get_lr(step, elapsed / span)
        for group in optimizer.param_groups:
            group["lr"] = lr

        x, y = get_batch(data.train, BATCH_SIZE, BLOCK_SIZE, batches)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        if not math.isfinite(loss.item()):
            print(f"step {step}: training loss is {loss.item()}, stopping (diverged)", file=sys.stderr)
            sys.exit(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()

        if step % LOG_EVERY == 0:
            print(f"step {step:5d} | loss {loss.item():.4f} | lr {lr:.2e} | {elapsed:6.1f}s", flush=True)
        step += 1

    train_s, wall_s = training_time() - t0, time.perf_counter() - wall0
    print(
        f"trained {step} steps in {train_s:.1f} CPU s ({wall_s:.1f} s wall) after {t0:.1f} CPU s of start-up, "
        f"{step * BATCH_SIZE * BLOCK_SIZE / max(train_s, 1e-9):,.0f} chars per CPU s"
    )
    save_artefact(model)


if __name__ == "__main__":
    train()
