"""
charlm evaluation. HIDDEN: ideas never see or change this file.

The metric is the mean next-character cross-entropy (nats) over a fixed set of validation windows:
EVAL_WINDOWS windows of EVAL_CONTEXT + 1 characters, evenly spaced over the validation split, so every
run is scored on exactly the same EVAL_WINDOWS * EVAL_CONTEXT predictions whatever it trained with.
The loss is computed here from the model's logits (the model cannot report its own), and the model must
be causal: a position's logits may not change when later characters change.
"""

import json

import torch
import torch.nn.functional as F
from prepare import EVAL_CONTEXT, load_shakespeare

EVAL_WINDOWS = 512  # 512 * 64 = 32,768 scored characters
EVAL_BATCH = 64
CAUSAL_TOLERANCE = 1e-4


def _logits(model, idx, vocab_size):
    logits = model(idx)
    expected = (idx.shape[0], idx.shape[1], vocab_size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"model(idx) must return logits of shape (B, T, vocab_size) = {expected}, got {got}")
    return logits.float()


def check_causal(model, idx, vocab_size):
    """Change the second half of each window and require the first half's logits to stay the same."""
    cut = idx.shape[1] // 2
    changed = idx.clone()
    changed[:, cut:] = (changed[:, cut:] + 1) % vocab_size
    a = _logits(model, idx, vocab_size)[:, :cut]
    b = _logits(model, changed, vocab_size)[:, :cut]
    drift = (a - b).abs().max().item()
    if not drift <= CAUSAL_TOLERANCE:
        raise RuntimeError(
            f"the model is not causal: logits at positions < {cut} changed by {drift:.3g} when only later "
            "characters changed (a position may only see itself and earlier characters)"
        )


@torch.no_grad()
def evaluate(model, step=None):
    """Print and return the validation loss: `val_loss: X` and an `@metric` JSON line."""
    data = load_shakespeare()  # read again from disk, so training code cannot alter what is scored
    val = data.val
    starts = torch.linspace(0, len(val) - EVAL_CONTEXT - 1, EVAL_WINDOWS).long().tolist()
    windows = torch.stack([val[s : s + EVAL_CONTEXT + 1] for s in starts])  # (W, EVAL_CONTEXT + 1)

    was_training = model.training
    model.eval()
    check_causal(model, windows[:4, :-1], data.vocab_size)
    total = 0.0
    for i in range(0, EVAL_WINDOWS, EVAL_BATCH):
        x, y = windows[i : i + EVAL_BATCH, :-1], windows[i : i + EVAL_BATCH, 1:]
        logits = _logits(model, x, data.vocab_size)
        total += F.cross_entropy(logits.reshape(-1, data.vocab_size), y.reshape(-1), reduction="sum").item()
    model.train(was_training)

    val_loss = total / (EVAL_WINDOWS * EVAL_CONTEXT)
    print(f"val_loss: {val_loss:.6f}")
    record = {"name": "val_loss", "value": val_loss}  # a diverged model prints NaN, judged invalid
    if step is not None:
        record["step"] = int(step)
    print("@metric " + json.dumps(record), flush=True)
    return val_loss
