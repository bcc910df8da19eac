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

The model code (train.py, imported, not run as __main__, so it does not train) runs in a child process of
its own, forked before the validation text is read: it gets character ids and sends logits back through a
pipe, and never holds the targets, this process's standard output, the loss function or anything else the
score is made of. This process is not dumpable, so the child cannot open its descriptors or memory
through /proc. In the child, what the model code could replace is bound before the import and checked
after it and after every forward pass (a replaced function or class attribute ends the scoring with
`idealab-tampered: <what>`), the data files cannot be opened and the heap cannot be walked. What the model
code prints goes to stderr: only this file's metric line reaches stdout, written once the child is dead.
"""

import builtins
import ctypes
import json
import os
import resource
import signal
import struct
import sys
import traceback
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
PR_SET_DUMPABLE = 4  # prctl(2)

# -------------------------------------------------------------------------------- what scoring relies on
# Modules and classes whose attributes the scoring uses, directly or through torch: none may be replaced.
# Classes may not gain attributes either (a new method on a subclass-free class overrides an inherited one).
_GUARDED_MODULES = (builtins, torch, F, nn.init, json, os, prepare, sys.modules[__name__])
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


def _validation_windows():
    """(EVAL_WINDOWS, EVAL_CONTEXT + 1) character ids, evenly spaced over the validation text."""
    vocab = prepare.load_vocab()
    val = prepare.encode(prepare.data_file("val.txt").read_text(encoding="utf-8"), vocab)
    starts = torch.linspace(0, len(val) - prepare.EVAL_CONTEXT - 1, EVAL_WINDOWS).long().tolist()
    return torch.stack([val[s : s + prepare.EVAL_CONTEXT + 1] for s in starts]), len(vocab)


def _artefact_dir():
    return Path(os.environ.get("IDEALAB_ARTEFACT_DIR") or "artefact")


# audit events that reach other objects of the process without a reference to them
_MEMORY_WALKS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"})


def _forbid_data_reads():
    """From now on no code in this process may open the data (or artefact) files, nor walk the heap."""
    private = [str(prepare.data_dir().resolve()), str(_artefact_dir().resolve())]

    def hook(event, args):
        if event in _MEMORY_WALKS:
            raise PermissionError(f"scoring: the model code may not use {event}")
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            path = os.path.realpath(os.fsdecode(args[0]))
            if any(path == p or path.startswith(p + os.sep) for p in private):
                raise PermissionError(f"scoring: the model code may not open {path}")

    sys.addaudithook(hook)


# ------------------------------------------------------------------ the model code, in a process of its own
# Messages from the child: one kind byte, then a payload. b"L": logits, (B, T, V) as three int64 then
# float32 values; b"T": tampering found, b"E": the model code failed (both a length-prefixed utf-8 text).
_DIMS = struct.Struct("<3q")
_LENGTH = struct.Struct("<q")


def _text(kind, text):
    data = text.encode()
    return kind + _LENGTH.pack(len(data)) + data


def _answer_size(data):
    """The size of the one message at the start of `data` (-1 where there is none)."""
    if data[:1] == b"L" and len(data) >= 1 + _DIMS.size:
        dims = _DIMS.unpack(data[1 : 1 + _DIMS.size])
        return 1 + _DIMS.size + 4 * dims[0] * dims[1] * dims[2] if min(dims) >= 0 else -1
    if data[:1] in (b"T", b"E") and len(data) >= 1 + _LENGTH.size:
        return 1 + _LENGTH.size + _LENGTH.unpack(data[1 : 1 + _LENGTH.size])[0]
    return -1


def _reply(out, kind, text):
    """Send a text message and end the worker."""
    out.write(_text(kind, text))
    out.flush()
    os._exit(0)


def _zygote(requests, replies):
    """Forked before the validation text is read, and never imports the model code itself: for each
    request (B, T int64 character ids) a fresh worker process imports train.py, builds and loads the model
    and answers, then ends. So nothing the model code keeps in memory survives from one call to the next (a
    model that remembered the rows it was given could look ahead past the causality check)."""
    state = torch.load(_artefact_dir() / prepare.ARTEFACT_NAME, map_location="cpu", weights_only=True)
    prepare.load_vocab()  # read (and kept) before the data files are closed to the model code
    _forbid_data_reads()
    while header := requests.read(16):
        shape = struct.unpack("<2q", header)
        ids = requests.read(8 * shape[0] * shape[1])
        answer_r, answer_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(answer_r)
            requests.close()
            replies.close()
            _worker(state, torch.frombuffer(bytearray(ids), dtype=torch.long).view(shape), answer_w)
        os.close(answer_w)
        with os.fdopen(answer_r, "rb") as answer:
            data = answer.read()
        _, status = os.waitpid(pid, 0)
        if _answer_size(data) != len(data):  # one answer to this request, no more (none for the next ones)
            data = _text(b"E", f"the model process sent {len(data)} bytes, not one answer (wait status {status})")
        replies.write(data)
        replies.flush()
    os._exit(0)


# audit events by which the model code could keep something for its next call, or act after it ended
_PERSISTENCE = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "subprocess.Popen",
                "os.mkdir", "os.rename", "os.symlink", "os.link", "os.truncate", "socket.bind", "socket.connect",
                "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function")  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _forbid_persistence():
    """In a worker: no file opened for writing, no new process, no socket, no foreign function; and
    (enforced by the kernel, whatever the API) no byte written to any file."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    sys.dont_write_bytecode = True

    def hook(event, args):
        if event in _PERSISTENCE:
            raise PermissionError(f"scoring: the model code may not use {event}")
        if event == "open" and len(args) > 2:
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
                raise PermissionError(f"scoring: the model code may not open {args[0]!r} for writing")

    sys.addaudithook(hook)


def _worker(state, idx, answer_fd):
    """One call of the model code: import train.py, build and load the model, answer `idx`, end."""
    out = os.fdopen(answer_fd, "wb")
    try:
        _forbid_persistence()
        before = _snapshot()
        import train  # the model code of the job; not __main__, so it does not train

        changed = _changes(before)
        if changed:
            _reply(out, b"T", f"train.py replaced what the scoring relies on: {', '.join(changed[:5])}")
        model = train.build_model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"build_model() must return a torch.nn.Module, got {type(model).__name__}")
        model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            logits = model(idx)
            again = model(idx)  # the same question twice: the answer may depend on the input alone
        changed = _changes(before)
        if changed:
            _reply(out, b"T", f"the model code replaced what the scoring relies on: {', '.join(changed[:5])}")
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise TypeError(f"model(idx) must return logits of shape (B, T, vocab_size), got {got}")
        same_shape = isinstance(again, torch.Tensor) and again.shape == logits.shape
        drift = (logits - again).abs().max().item() if same_shape else None
        if drift is None or not drift <= CAUSAL_TOLERANCE:
            raise RuntimeError(
                "the model is not a function of its input: asked the same characters twice, its logits changed "
                f"by {drift if drift is not None else 'shape'} (it keeps state from call to call, or is random "
                "in eval mode)"
            )
        out.write(b"L" + _DIMS.pack(*logits.shape) + logits.detach().float().contiguous().numpy().tobytes())
        out.flush()
    except BaseException as exc:  # noqa: BLE001  (whatever the model code raised ends its scoring)
        traceback.print_exc()
        _reply(out, b"E", f"{type(exc).__name__}: {exc}")
    os._exit(0)


class ModelProcess:
    """The parent's side: a callable that returns the child's logits for character ids."""

    def __init__(self):
        child_r, self_w = os.pipe()
        self_r, child_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(_STDOUT)  # the metric's descriptor is this process's alone
            os.close(self_w)
            os.close(self_r)
            _zygote(os.fdopen(child_r, "rb"), os.fdopen(child_w, "wb"))
        os.close(child_r)
        os.close(child_w)
        self.requests, self.replies = os.fdopen(self_w, "wb"), os.fdopen(self_r, "rb")

    def __call__(self, idx):
        batch, length = idx.shape
        self.requests.write(struct.pack("<2q", batch, length) + idx.long().contiguous().numpy().tobytes())
        self.requests.flush()
        kind = self.replies.read(1)
        if kind == b"L":
            dims = _DIMS.unpack(self.replies.read(_DIMS.size))
            count = dims[0] * dims[1] * dims[2]
            values = self.replies.read(4 * count) if 0 <= min(dims) and count <= 4 * batch * length * 2**16 else b""
            if len(values) != 4 * count:
                raise RuntimeError(f"the model process sent {len(values)} bytes of logits for shape {dims}")
            return torch.frombuffer(bytearray(values), dtype=torch.float32).view(dims)
        if kind in (b"T", b"E"):
            text = self.replies.read(_LENGTH.unpack(self.replies.read(_LENGTH.size))[0]).decode(errors="replace")
            if kind == b"T":
                _tampered(text)
            raise RuntimeError(f"the model code failed: {text}")
        raise RuntimeError(f"the model process ended or sent {kind[:1]!r} where logits were expected")

    def stop(self):
        """Kill the child and wait for it: nothing of the model code runs once the metric is written."""
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


# --------------------------------------------------------------------------------------------- scoring


def _tampered(what):
    os.write(_STDOUT, f"{TAMPERED} {what}\n".encode())
    sys.stderr.flush()
    os._exit(3)


_STDOUT = 1  # main() moves the real stdout to a descriptor of its own


def _logits(model, idx, vocab_size):
    logits = model(idx)
    expected = (idx.shape[0], idx.shape[1], vocab_size)
    if tuple(logits.shape) != expected:
        raise TypeError(f"model(idx) must return logits of shape (B, T, vocab_size) = {expected}, "
                        f"got {tuple(logits.shape)}")  # fmt: skip
    return logits


_UNPREDICTABLE = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))


def check_causal(model, windows, vocab_size):
    """At each batch size and cut point, change every character from the cut on and require the logits
    before the cut to stay the same. The changes are random (a model process that could undo them would
    know the row it was changed from, and could give the logits that row's lookahead gave)."""
    for batch in CAUSAL_BATCHES:
        idx = windows[:batch, :-1]
        base = _logits(model, idx, vocab_size)
        for cut in CAUSAL_CUTS:
            changed = idx.clone()  # every later character changed, by a shift the model cannot predict
            shift = torch.randint(1, vocab_size, changed[:, cut:].shape, generator=_UNPREDICTABLE)
            changed[:, cut:] = (changed[:, cut:] + shift) % vocab_size
            drift = (base[:, :cut] - _logits(model, changed, vocab_size)[:, :cut]).abs().max().item()
            if not drift <= CAUSAL_TOLERANCE:
                raise RuntimeError(
                    f"the model is not causal: at batch size {batch}, logits at positions < {cut} changed by "
                    f"{drift:.3g} when only later characters changed (a position may only see itself and "
                    "earlier characters)"
                )


@torch.no_grad()
def evaluate(model, windows, vocab_size):
    """The validation loss of `model` (a callable from character ids to logits) over `windows`."""
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
    _STDOUT = os.dup(1)  # the metric line goes here; whatever else is printed goes to stderr
    os.dup2(2, 1)
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    model = ModelProcess()  # forked before the validation text is read: the child never holds it
    windows, vocab_size = _validation_windows()
    val_loss = evaluate(model, windows, vocab_size)
    model.stop()
    record = {"name": "val_loss", "value": val_loss}  # a diverged model gives NaN, judged invalid
    sys.stderr.flush()
    os.write(_STDOUT, f"val_loss: {val_loss:.6f}\n@metric {json.dumps(record)}\n".encode())
    os._exit(0)


if __name__ == "__main__":
    main()
