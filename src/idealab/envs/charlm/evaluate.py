"""
charlm scoring. HIDDEN: ideas never see or change this file. The manifest's scoring command
(`python evaluate.py`), run by idealab in a process of its own after training, in a fresh directory
holding this file, prepare.py and the train.py the job ran; the trained state dict is read from
IDEALAB_ARTEFACT_DIR.

The metric is the mean next-character cross-entropy (nats) over a fixed set of validation windows:
EVAL_WINDOWS windows of EVAL_CONTEXT + 1 characters, evenly spaced over the validation text (a file only
this process can read), so every run is scored on exactly the same EVAL_WINDOWS * EVAL_CONTEXT predictions
whatever it trained with (`--quick`, the preflight's scoring: QUICK_WINDOWS windows only). The loss is
computed here from the model's logits, and the model must be causal: a position's logits may not change
when later characters change (checked at several batch sizes and several cut points).

The model code is imported from train.py (not run as __main__, so it does not train), and so runs in this
process. Everything the scoring relies on is bound before that import and checked after it and after the
evaluation: a replaced function or class attribute prints `idealab-tampered: <what>` and exits non-zero.
What train.py prints goes to stderr (only this file's metric line reaches stdout), and once the validation
text is read no code in this process may open the data files again.
"""

import builtins
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import prepare

EVAL_WINDOWS = 512  # 512 * 64 = 32,768 scored characters
QUICK_WINDOWS = 64  # `--quick` (the manifest's score.preflight_command): the full causality check, one batch
EVAL_BATCH = 64
CAUSAL_TOLERANCE = 1e-4
CAUSAL_BATCHES = (1, 5, EVAL_BATCH)  # a model must not look ahead at any batch size...
CAUSAL_CUTS = (1, 16, 33, prepare.EVAL_CONTEXT - 1)  # ...nor from any position
TAMPERED = "idealab-tampered:"

# -------------------------------------------------------------------------------- what scoring relies on
# Modules and classes whose attributes the scoring uses, directly or through torch: none may be replaced.
# Classes may not gain attributes either (a new method on a subclass-free class overrides an inherited one).
_GUARDED_MODULES = (builtins, torch, F, nn.init, json, os, prepare)
_GUARDED_CLASSES = (torch.Tensor, torch._C.TensorBase, nn.Module, nn.Linear, nn.Embedding, nn.LayerNorm)


def _snapshot():
    found = {}
    for owner in (*_GUARDED_MODULES, *_GUARDED_CLASSES):
        for name, value in list(vars(owner).items()):
            found[(owner, name)] = value
    return found


def _changes(before):
    """What differs from `before`: replaced attributes of the guarded modules and classes, and attributes
    a guarded class gained."""
    changed = []
    for (owner, name), value in before.items():
        if vars(owner).get(name, _changes) is not value:
            changed.append(f"{getattr(owner, '__name__', owner)}.{name}")
    for owner in _GUARDED_CLASSES:
        for name in vars(owner):
            if (owner, name) not in before:
                changed.append(f"{owner.__name__}.{name} (added)")
    return changed


def _tampered(what):
    os.write(_STDOUT, f"{TAMPERED} {what}\n".encode())
    sys.stderr.flush()
    os._exit(3)


_write, _exit = os.write, os._exit
_STDOUT = 1  # main() moves the real stdout to a descriptor of its own


def _validation_windows():
    """(EVAL_WINDOWS, EVAL_CONTEXT + 1) character ids, evenly spaced over the validation text."""
    vocab = prepare.load_vocab()
    val = prepare.encode(prepare.data_file("val.txt").read_text(encoding="utf-8"), vocab)
    starts = torch.linspace(0, len(val) - prepare.EVAL_CONTEXT - 1, EVAL_WINDOWS).long().tolist()
    return torch.stack([val[s : s + prepare.EVAL_CONTEXT + 1] for s in starts]), len(vocab)


def _load_state():
    path = Path(os.environ.get("IDEALAB_ARTEFACT_DIR") or "artefact") / prepare.ARTEFACT_NAME
    return torch.load(path, map_location="cpu", weights_only=True)


# audit events that reach other objects of the process (the scorer's data) without a reference to them
_MEMORY_WALKS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"})


def _forbid_data_reads():
    """From now on no code in this process may open the data (or artefact) files: the model code runs
    next, in this process, and the validation text must reach it only as the windows scored."""
    artefact = Path(os.environ.get("IDEALAB_ARTEFACT_DIR") or "artefact")
    private = [str(prepare.data_dir().resolve()), str(artefact.resolve())]

    def hook(event, args):
        if event in _MEMORY_WALKS:  # the validation windows are objects of this process: no walking the heap
            raise PermissionError(f"scoring: the model code may not use {event}")
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            path = os.path.realpath(os.fsdecode(args[0]))
            if any(path == p or path.startswith(p + os.sep) for p in private):
                raise PermissionError(f"scoring: the model code may not open {path}")

    sys.addaudithook(hook)


def _logits(model, idx, vocab_size):
    logits = model(idx)
    expected = (idx.shape[0], idx.shape[1], vocab_size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"model(idx) must return logits of shape (B, T, vocab_size) = {expected}, got {got}")
    return logits.float()


def check_causal(model, windows, vocab_size):
    """At each batch size and cut point, change every character from the cut on and require the logits
    before the cut to stay the same."""
    for batch in CAUSAL_BATCHES:
        idx = windows[:batch, :-1]
        base = _logits(model, idx, vocab_size)
        for cut in CAUSAL_CUTS:
            changed = idx.clone()
            changed[:, cut:] = (changed[:, cut:] + 1 + cut) % vocab_size
            drift = (base[:, :cut] - _logits(model, changed, vocab_size)[:, :cut]).abs().max().item()
            if not drift <= CAUSAL_TOLERANCE:
                raise RuntimeError(
                    f"the model is not causal: at batch size {batch}, logits at positions < {cut} changed by "
                    f"{drift:.3g} when only later characters changed (a position may only see itself and "
                    "earlier characters)"
                )


@torch.no_grad()
def evaluate(model, windows, vocab_size):
    """The validation loss of `model` (put in eval mode) over `windows`."""
    model.eval()
    check_causal(model, windows, vocab_size)
    total = 0.0
    for i in range(0, EVAL_WINDOWS, EVAL_BATCH):
        x, y = windows[i : i + EVAL_BATCH, :-1], windows[i : i + EVAL_BATCH, 1:]
        logits = _logits(model, x, vocab_size)
        total += F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1), reduction="sum").item()
    return total / (EVAL_WINDOWS * prepare.EVAL_CONTEXT)


def main():
    global _STDOUT, EVAL_WINDOWS
    if "--quick" in sys.argv[1:]:
        EVAL_WINDOWS = QUICK_WINDOWS
    before = _snapshot()
    _STDOUT = os.dup(1)  # the metric line goes here; whatever else is printed in this process goes to stderr
    os.dup2(2, 1)
    windows, vocab_size = _validation_windows()
    state = _load_state()
    _forbid_data_reads()
    import train  # the model code of the job; not __main__, so it does not train

    changed = _changes(before)
    if changed:
        _tampered(f"train.py replaced what the scoring relies on: {', '.join(changed[:5])}")
    model = train.build_model()
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_model() must return a torch.nn.Module, got {type(model).__name__}")
    model.load_state_dict(state, strict=True)
    val_loss = evaluate(model, windows, vocab_size)
    changed = _changes(before)
    if changed:
        _tampered(f"the model code replaced what the scoring relies on: {', '.join(changed[:5])}")
    record = {"name": "val_loss", "value": val_loss}  # a diverged model gives NaN, judged invalid
    sys.stdout.flush()
    sys.stderr.flush()
    _write(_STDOUT, f"val_loss: {val_loss:.6f}\n@metric {json.dumps(record)}\n".encode())
    _exit(0)  # nothing of the model code runs after the metric (atexit handlers, threads)


if __name__ == "__main__":
    main()
