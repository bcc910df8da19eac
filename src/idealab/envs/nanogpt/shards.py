"""llm.c token shards: the on-disk format of the nanogpt environment's data, and the loaders.

A shard is a header of 256 int32 (magic 20240520, version 1, number of tokens, then zeros) followed by
that many uint16 tokens. By convention the first shard of a data set is the validation shard.
This file is read-only for ideas: data loading decides what the model sees and must not change.
"""

import glob
import os

import numpy as np
import torch

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(ValueError):
    """A file that is not a valid token shard; the message names the file and what is wrong."""


def write_shard(path, tokens):
    """Write `tokens` (ints in 0..65535) as one shard, atomically (temp file, then rename)."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 65535):
        raise ShardError(f"{path}: token ids must fit in uint16, got range [{tokens.min()}, {tokens.max()}]")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1], header[2] = MAGIC, VERSION, tokens.size
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())
    os.replace(tmp, path)


def read_header(path):
    """The number of tokens in a shard, after checking its header and size."""
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: too short for a token shard header ({len(raw)} of {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype=np.int32)
    if header[0] != MAGIC:
        raise ShardError(f"{path}: bad magic number {header[0]} (expected {MAGIC}): not an llm.c token shard")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {VERSION})")
    ntok = int(header[2])
    expected = HEADER_BYTES + 2 * ntok
    actual = os.path.getsize(path)
    if actual != expected:
        raise ShardError(f"{path}: header says {ntok} tokens ({expected} bytes) but the file has {actual} bytes")
    return ntok


def load_tokens(path):
    """All tokens of a shard as a uint16 numpy array (memory-mapped: shards are large)."""
    ntok = read_header(path)
    return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(ntok,))


def expand_glob(pattern):
    files = sorted(glob.glob(os.path.expanduser(os.path.expandvars(pattern))))
    if not files:
        raise FileNotFoundError(
            f"no token shards match {pattern!r}: run the environment's set-up (`python prepare.py ...`)"
        )
    return files


class DistributedDataLoader:
    """Endless stream of (x, y) batches of shape (B, T) for one rank, cycling through the shards.

    Rank r takes the r-th of `world` consecutive B*T chunks, so the ranks together read the stream once.
    """

    def __init__(self, pattern, B, T, rank=0, world=1):
        self.files = expand_glob(pattern)
        self.B, self.T, self.rank, self.world = B, T, rank, world
        need = B * T * world + 1
        for f in self.files:
            if read_header(f) < need:
                raise ShardError(f"{f}: has {read_header(f)} tokens, fewer than one global batch ({need})")
        self.reset()

    def reset(self):
        self.shard = 0
        self.tokens = load_tokens(self.files[0])
        self.pos = self.rank * self.B * self.T

    def next_batch(self):
        B, T = self.B, self.T
        buf = torch.from_numpy(self.tokens[self.pos : self.pos + B * T + 1].astype(np.int64))
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        self.pos += B * T * self.world
        if self.pos + B * T * self.world + 1 > len(self.tokens):  # next batch would run off: next shard
            self.shard = (self.shard + 1) % len(self.files)
            self.tokens = load_tokens(self.files[self.shard])
            self.pos = self.rank * B * T
        return x, y


def load_val_sequences(pattern, num_tokens, T, rank=0, world=1):
    """This rank's share of the first `num_tokens` validation tokens, as (inputs, targets) of shape (N, T).

    The validation stream is the concatenation of the matching shards; exactly `num_tokens` targets are
    scored in total across ranks, which needs num_tokens to be a multiple of T * world.
    """
    if num_tokens % (T * world) != 0:
        raise ValueError(f"val_tokens={num_tokens} is not a multiple of seq_len*world = {T}*{world}")
    parts, have = [], 0
    for f in expand_glob(pattern):
        if have >= num_tokens + 1:
            break
        part = load_tokens(f)[: num_tokens + 1 - have]
        parts.append(np.asarray(part))
        have += len(part)
    if have < num_tokens + 1:
        raise ShardError(f"validation shards {pattern!r} hold {have} tokens, {num_tokens + 1} are needed")
    stream = torch.from_numpy(np.concatenate(parts).astype(np.int64))
    per_rank = num_tokens // world
    start = rank * per_rank
    x = stream[start : start + per_rank].view(-1, T)
    y = stream[start + 1 : start + per_rank + 1].view(-1, T)
    return x, y
