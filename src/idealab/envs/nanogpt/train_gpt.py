"""GPT-2 small (124M, "d12") pre-training on FineWeb, the research environment of arXiv 2601.14525.

One file: hyperparameters, the model, the training loop. Run on 8 GPUs as
    torchrun --standalone --nproc_per_node=8 train_gpt.py
or as a single process (`python train_gpt.py`, one GPU or the CPU; same loop with world size 1).
Training stops after a fixed budget of wall-clock time (1500 s in the paper's setting) and saves the model;
idealab then scores it once, in a separate process, token by token with a key/value cache, on exactly
10,485,760 validation tokens: that process rebuilds the model with `build_model()` below and calls its
`forward_with_cache`. Regions between the protected-begin and protected-end marker comments must not be
changed.
"""

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel as DDP

# idealab: protected-begin (run settings, data loading, the time limit and saving the trained model)
from harness import SEED, SETTINGS, RunLogger, TrainClock, save_artefact
from shards import DistributedDataLoader
# idealab: protected-end

# ----------------------------------------------------------------------------------- hyperparameters
# The paper's d12 run. Presets change only the scale (model, batch, sequence length, iterations)
# through NANOGPT_* environment variables set in the manifest.
MODEL = os.environ.get("NANOGPT_MODEL", "d12")  # a key of MODEL_CONFIGS below
SEQ_LEN = int(os.environ.get("NANOGPT_SEQ_LEN", 1024))  # training context length
TOTAL_BATCH_TOKENS = int(os.environ.get("NANOGPT_GLOBAL_BATCH", 262144))  # tokens per optimiser step
DEVICE_BATCH = int(os.environ.get("NANOGPT_DEVICE_BATCH", 32))  # sequences per GPU per micro-step
NUM_ITERATIONS = int(os.environ.get("NANOGPT_NUM_ITERATIONS", 26880))  # the LR schedule's length
LEARNING_RATE = 0.0015
WARMUP_ITERS = 256  # linear warmup, then linear decay to LEARNING_RATE * 0.1 / 1.1 at NUM_ITERATIONS
WEIGHT_DECAY = 0.1
BETA1 = 0.9
BETA2 = 0.95
GRAD_CLIP = 1.0
COMPILE = os.environ.get("NANOGPT_COMPILE", "1") == "1"  # torch.compile the model (GPU only)
# SEED comes from harness.py (the job's IDEALAB_SEED): each run of the same code gets its own


# ------------------------------------------------------------------------------------------- model


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768


MODEL_CONFIGS = {
    "d12": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # GPT-2 small, 124M
    "d24": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "d36": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
    "d48": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
    "tiny": GPTConfig(vocab_size=256, n_layer=4, n_head=4, n_embd=128),  # CPU smoke test, byte tokens
}


def rmsnorm(x0, eps=1e-6):
    x = x0.float()  # computed in float32 whatever the autocast dtype
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x.type_as(x0)


class KVCache:
    """Keys and values of every layer for positions 0..pos-1, preallocated up to max_len positions.
    Used only by the token-by-token forward pass (validation)."""

    def __init__(self, n_layer, max_len):
        self.n_layer, self.max_len = n_layer, max_len
        self.k = self.v = None  # (n_layer, B, n_head, max_len, head_dim), allocated on first use
        self.pos = 0

    def append(self, layer, k, v):
        """Store k, v of shape (B, n_head, 1, head_dim) at the current position; return the keys and
        values of all positions so far, (B, n_head, pos+1, head_dim)."""
        if self.k is None:
            B, nh, _, hs = k.shape
            self.k = torch.empty(self.n_layer, B, nh, self.max_len, hs, dtype=k.dtype, device=k.device)
            self.v = torch.empty_like(self.k)
        assert self.pos < self.max_len, "KV cache is full"
        self.k[layer, :, :, self.pos] = k[:, :, 0]
        self.v[layer, :, :, self.pos] = v[:, :, 0]
        return self.k[layer, :, :, : self.pos + 1], self.v[layer, :, :, : self.pos + 1]


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def _heads(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        return [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]

    def _merge(self, y):
        B, _, T, _ = y.size()
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, self.n_embd))

    def forward(self, x):
        q, k, v = self._heads(x)
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def forward_with_cache(self, x, cache, layer):
        # x: (B, 1, C), the current position only; the cache holds every earlier position
        q, k, v = self._heads(x)
        k, v = cache.append(layer, k, v)
        return self._merge(F.scaled_dot_product_attention(q, k, v))  # one query over positions <= now


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.mlp = MLP(config)
        self.attn_scale = 1 / math.sqrt(2 * config.n_layer)  # 1/sqrt(24) for d12

    def forward(self, x):
        x = x + self.attn_scale * self.attn(rmsnorm(x))
        return x + self.mlp(rmsnorm(x))

    def forward_with_cache(self, x, cache, layer):
        x = x + self.attn_scale * self.attn.forward_with_cache(rmsnorm(x), cache, layer)
        return x + self.mlp(rmsnorm(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied input/output embeddings
        for emb in (self.transformer.wte, self.transformer.wpe):  # linear layers keep PyTorch's init
            nn.init.normal_(emb.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, return_logits=True):
        # idx, targets: (B, T) token ids; returns logits (B, T, vocab) in float32 and the mean loss
        T = idx.size(1)
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(rmsnorm(x)).float()
        loss = None
        if targets is not None:
            # idealab: protected-begin (the loss line)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            # idealab: protected-end
        return (logits if return_logits else None), loss

    def forward_with_cache(self, idx, cache=None):
        # idx: (B, 1), the token at position cache.pos; returns logits (B, 1, vocab) and the cache
        if cache is None:
            cache = KVCache(self.config.n_layer, self.config.block_size)
        pos = torch.full((1,), cache.pos, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        # not cuDNN attention: it builds a new plan for every cache length (+45 s on the first batch)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            for layer, block in enumerate(self.transformer.h):
                x = block.forward_with_cache(x, cache, layer)
        cache.pos += 1
        return self.lm_head(rmsnorm(x)).float(), cache


def build_model():
    """The model the scorer rebuilds (and loads the trained weights into) to validate it."""
    return GPT(MODEL_CONFIGS[MODEL])


def get_lr(step):
    if step < WARMUP_ITERS:
        return LEARNING_RATE * (step + 1) / WARMUP_ITERS
    decay = min(1.0, (step - WARMUP_ITERS) / max(1, NUM_ITERATIONS - WARMUP_ITERS))  # 0 -> 1
    return LEARNING_RATE * (0.1 + (1 - decay)) / 1.1


# ------------------------------------------------------------------------------------------- training


def main():
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
    on_gpu = device.startswith("cuda")
    torch.manual_seed(SEED)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext()

    tokens_per_micro_step = DEVICE_BATCH * SEQ_LEN * world
    assert TOTAL_BATCH_TOKENS % tokens_per_micro_step == 0, "batch must divide into micro-batches"
    grad_accum = TOTAL_BATCH_TOKENS // tokens_per_micro_step

    # idealab: protected-begin (training data)
    train_loader = DistributedDataLoader(SETTINGS.train_glob, DEVICE_BATCH, SEQ_LEN, rank, world)
    # idealab: protected-end

    raw_model = build_model().to(device)  # the eager model: the one saved and validated token by token
    n_params = sum(p.numel() for p in raw_model.parameters())
    model = torch.compile(raw_model) if (COMPILE and on_gpu) else raw_model
    if ddp:
        model = DDP(model, device_ids=[torch.device(device).index])
    optimizer = torch.optim.AdamW(
        raw_model.parameters(), lr=LEARNING_RATE, betas=(BETA1, BETA2), weight_decay=WEIGHT_DECAY,
        fused=on_gpu,
    )
    if master:
        print(f"model {MODEL}: {n_params:,} parameters; world {world}, micro-batch {DEVICE_BATCH}x{SEQ_LEN}, "
              f"grad accumulation {grad_accum}, {TOTAL_BATCH_TOKENS:,} tokens/step, device {device}", flush=True)
    logger = RunLogger(SETTINGS, {"model": MODEL, "world": world, "lr": LEARNING_RATE}, enabled=master)

    # idealab: protected-begin (the training-time limit)
    clock = TrainClock(device, SETTINGS.time_limit_s, SETTINGS.clock)
    clock.start()
    # idealab: protected-end
    step = 0
    while step < NUM_ITERATIONS:
        # idealab: protected-begin (the training-time limit)
        if clock.should_stop():
            break
        # idealab: protected-end
        t0 = time.perf_counter()
        model.train()
        train_loss = torch.zeros((), device=device)
        for micro_step in range(grad_accum):
            x, y = train_loader.next_batch()
            if on_gpu:
                x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
            if ddp:  # all-reduce the gradients only on the last micro-step
                model.require_backward_grad_sync = micro_step == grad_accum - 1
            with autocast:
                _, loss = model(x, y, return_logits=False)
            (loss / grad_accum).backward()
            train_loss += loss.detach() / grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), GRAD_CLIP)
        lr = get_lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_loss = train_loss.item()  # waits for the step to finish
        if not math.isfinite(train_loss):
            raise SystemExit(f"train loss is {train_loss} at step {step}: the run diverged")
        dt = time.perf_counter() - t0
        logger.step(step, train_loss, grad_norm.item(), lr, TOTAL_BATCH_TOKENS / dt, dt)

    optimizer.zero_grad(set_to_none=True)
    del optimizer, model

    # idealab: protected-begin (saving the trained model for the scorer)
    # uses: clock, raw_model, step, master, on_gpu, logger
    train_time_s = clock.elapsed_s()
    if master:
        if on_gpu:
            print(f"peak memory during training: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
        print(f"step:{step} train_time:{train_time_s * 1000:.0f}ms", flush=True)
        save_artefact(raw_model, step, train_time_s)
        logger.final(step, train_time_s)
    # idealab: protected-end
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
