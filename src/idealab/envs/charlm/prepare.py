"""
charlm data and run settings. READ-ONLY: ideas may not change this file.

Loads the Shakespeare text fetched once at set-up (`idealab data get shakespeare` writes
$IDEALAB_DATA_DIR/shakespeare/input.txt), builds the character vocabulary, splits the text 90/10 into
train and validation, and fixes what makes runs comparable: the training time budget, the number of CPU
threads, the seed and the evaluation context length. Nothing here downloads anything.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# -----------------------------------------------------------------------------
# run settings, set by the manifest's environment (see idealab.toml), never by an idea
TIME_BUDGET_S = float(os.environ.get("CHARLM_TIME_BUDGET_S", "40"))  # training time, seconds of CPU time
THREADS = int(os.environ.get("CHARLM_THREADS", "1"))  # torch intra-op threads
# the job's seed (idealab sets IDEALAB_SEED, a different one for each run): initialisation and batch order
# follow it, so repeated runs measure the noise and an idea cannot pin a lucky seed
SEED = int(os.environ.get("IDEALAB_SEED", "1337"))
EVAL_CONTEXT = 64  # characters of context per validation window; the model must accept this length
VAL_FRACTION = 0.1  # the last 10% of the text is validation
# -----------------------------------------------------------------------------

torch.set_num_threads(THREADS)
torch.manual_seed(SEED)


def training_time():
    """The clock TIME_BUDGET_S is measured on: seconds of CPU time used by this process (all its threads).

    CPU time rather than wall-clock, so that a run on a machine shared with other jobs gets the same
    compute as a run on an idle one (with one thread, one CPU second is one second of work)."""
    return time.process_time()


def data_file():
    # the same rule as idealab.paths.data_dir(); the environment does not import idealab
    root = os.environ.get("IDEALAB_DATA_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "idealab")
    path = Path(root).expanduser() / "shakespeare" / "input.txt"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `idealab data get shakespeare` (or `make data`) first")
    return path


@dataclass
class Data:
    train: torch.Tensor  # (N_train,) int64 character ids
    val: torch.Tensor  # (N_val,) int64 character ids
    vocab_size: int
    itos: list  # id -> character

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids)


def load_shakespeare():
    text = data_file().read_text(encoding="utf-8")
    # characters as code points (4 bytes each); a character's id is its rank among the distinct ones
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    present = np.zeros(int(codes.max()) + 1, dtype=bool)
    present[codes] = True
    chars = np.flatnonzero(present)
    rank = np.cumsum(present) - 1  # code point -> id
    ids = torch.from_numpy(rank[codes].astype(np.int64))
    n_train = int(len(ids) * (1 - VAL_FRACTION))
    return Data(ids[:n_train], ids[n_train:], len(chars), [chr(c) for c in chars])


def get_batch(data, batch_size, block_size, generator=None):
    """Random windows of `data`: inputs x (B, T) and next-character targets y (B, T)."""
    ix = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[i : i + block_size] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix.tolist()])
    return x, y
