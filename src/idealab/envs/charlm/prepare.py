"""
charlm data and run settings. READ-ONLY: ideas may not change this file.

Loads the Shakespeare training text prepared once at set-up (`idealab data get shakespeare` writes
$IDEALAB_DATA_DIR/shakespeare/train.txt, the first 90% of the text, and vocab.json, the characters of the
whole text), and fixes what makes runs comparable: the training time budget, the number of CPU threads, the
seed and the evaluation context length. The validation text is not here: only the scoring step (the hidden
evaluate.py, a process of its own) can read it. Nothing here downloads anything.

The training budget is the executor's: it measures the CPU time of every process of the job and sends
SIGUSR1 when the budget is spent (then kills the job after a grace period). `training_time()` and
`out_of_time()` let the training loop stop on its own at the same point.
"""

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# -----------------------------------------------------------------------------
# run settings, set by the manifest ([budget] and the environment), never by an idea
# CPU seconds of training: idealab sets IDEALAB_BUDGET_S from the manifest's [budget] (presets change it);
# CHARLM_TIME_BUDGET_S sets it for a run by hand (`CHARLM_TIME_BUDGET_S=5 python train.py`)
TIME_BUDGET_S = float(os.environ.get("IDEALAB_BUDGET_S") or os.environ.get("CHARLM_TIME_BUDGET_S") or "40")
THREADS = int(os.environ.get("CHARLM_THREADS", "1"))  # torch intra-op threads
# the job's seed (idealab sets IDEALAB_SEED, a different one for each run): initialisation and batch order
# follow it, so repeated runs measure the noise and an idea cannot pin a lucky seed
SEED = int(os.environ.get("IDEALAB_SEED", "1337"))
EVAL_CONTEXT = 64  # characters of context per validation window; the model must accept this length
ARTEFACT_NAME = "model.pt"  # the trained model's state dict, in IDEALAB_OUTPUT_DIR
# -----------------------------------------------------------------------------

torch.set_num_threads(THREADS)
torch.manual_seed(SEED)

_budget_spent = []  # set by SIGUSR1: the executor says the budget is spent
signal.signal(signal.SIGUSR1, lambda *_: _budget_spent.append(True))


def training_time():
    """The clock TIME_BUDGET_S is measured on: seconds of CPU time used by this process (all its threads),
    from its start, as the executor counts it.

    CPU time rather than wall-clock, so that a run on a machine shared with other jobs gets the same
    compute as a run on an idle one (with one thread, one CPU second is one second of work)."""
    return time.process_time()


def out_of_time():
    """True once the budget is spent (on this process's clock, or as the executor signalled)."""
    return bool(_budget_spent) or training_time() >= TIME_BUDGET_S


def data_dir():
    # the same rule as idealab.paths.data_dir(); the environment does not import idealab
    root = os.environ.get("IDEALAB_DATA_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "idealab")
    return Path(root).expanduser() / "shakespeare"


def data_file(name):
    path = data_dir() / name
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: run `idealab data get shakespeare` (or `make data`) first; it also splits "
            "the text of an older data directory"
        )
    return path


@dataclass
class Data:
    train: torch.Tensor  # (N_train,) int64 character ids
    vocab_size: int
    itos: list  # id -> character

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids)


_vocab = []  # read once: the scoring reads it before the model code runs, which may not read files


def load_vocab():
    """The characters of the whole text (code points, sorted): a character's id is its rank."""
    if not _vocab:
        _vocab.append(np.array(json.loads(data_file("vocab.json").read_text()), dtype=np.uint32))
    return _vocab[0].copy()


def encode(text, vocab):
    """Character ids (int64) of `text`."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    rank = np.zeros(int(vocab.max()) + 1, dtype=np.int64)
    rank[vocab] = np.arange(len(vocab))
    return torch.from_numpy(rank[codes])


def load_shakespeare():
    vocab = load_vocab()
    train = encode(data_file("train.txt").read_text(encoding="utf-8"), vocab)
    return Data(train, len(vocab), [chr(c) for c in vocab])


def get_batch(data, batch_size, block_size, generator=None):
    """Random windows of `data`: inputs x (B, T) and next-character targets y (B, T)."""
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix.tolist()])
    return x, y


def save_artefact(model):
    """Save the trained model's state dict where the scoring step reads it (IDEALAB_OUTPUT_DIR)."""
    out = Path(os.environ.get("IDEALAB_OUTPUT_DIR") or "artefact")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / ARTEFACT_NAME)
    return out / ARTEFACT_NAME
