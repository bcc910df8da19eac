"""GRPO post-training of a math model on MATH, on one GPU (or a CPU for the smoke preset).

Read top to bottom: config, reward, advantages, losses, tokenisation, the training loop.
Every setting below is the paper's (arXiv 2601.14525, GRPO environment). Override any of them with an
environment variable GRPO_<NAME> (what the manifest's presets do) or `--NAME=value` on the command line.

Evaluation (the metric) is not done here: at the start of every step the protected harness saves the
policy weights that the paper's evaluation schedule sees (every other step, the weights of the previous
step's start), and idealab's hidden scorer samples and grades them after training, in a separate process,
with its own fixed grader, evaluation set and sampling settings.
"""

import json
import os
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from data import STOP, data_root, job_seed, load_problems, load_prompt_template
from grader import grade
# idealab: protected-begin (the evaluation schedule's policy snapshots)
from harness import PolicySnapshots
# idealab: protected-end
from rollout import make_engine

# ----------------------------------------------------------------------------------------- config
MODEL = "qwen2.5-math-1.5b"  # a directory under <data>/models (prepare.py fills it) or a path
TRAIN_SET = "math/train.jsonl"  # under <data>: 7,500 MATH training problems
LEARNING_RATE = 1e-5
GRPO_STEPS = 20  # rollout -> train rounds
ROLLOUT_PROMPTS = 128  # questions sampled per GRPO step ("rollout subset"); 64 on an A100
GROUP_SIZE = 8  # responses per question
EPOCHS_PER_ROLLOUT = 1  # passes over each rollout batch
MICRO_BATCH = 4  # sequences per forward/backward; 2 on an A100
GRAD_ACCUM = 16  # micro-batches per optimiser step; 32 on an A100
LOSS_TYPE = "grpo_clip"  # no_baseline | reinforce_with_baseline | grpo_clip
CLIP_RANGE = 0.2
ADV_EPS = 1e-6  # advantage = (r - group mean) / (group std + ADV_EPS)
NORMALIZE_BY_STD = True
WEIGHT_DECAY = 0.0
BETA1, BETA2 = 0.9, 0.95
GRAD_CLIP = 0.0  # max global grad norm; 0 = off (the paper's setting: no clipping)
TEMPERATURE = 1.0  # rollout sampling; evaluation uses the scorer's own settings
TOP_P = 1.0
MAX_RESPONSE_LEN = 1024  # new tokens per rollout
TRAIN_REWARD = "r1_zero"  # r1_zero (the paper's, = the evaluation grader) | lenient (small models)
ROLLOUT_ENGINE = "auto"  # auto (vLLM when installed, on CUDA) | vllm | transformers
GPU_MEMORY_UTILIZATION = 0.55  # vLLM's share of the GPU; training uses the rest
GEN_BATCH = 256  # sequences per transformers.generate call
DTYPE = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
WANDB_PROJECT = ""  # Weights & Biases project; empty = no W&B logging


def apply_overrides(names, argv, environ):
    """GRPO_<NAME>=value in the environment, then --NAME=value arguments, cast to the default's type."""
    g = globals()
    pairs = [(k[len("GRPO_"):], v) for k, v in environ.items() if k.startswith("GRPO_") and k[5:] in names]
    for arg in argv:
        key, sep, value = arg.lstrip("-").partition("=")
        if not sep or key not in names:
            sys.exit(f"unknown argument {arg!r}; settings: {', '.join(sorted(names))}")
        pairs.append((key, value))
    for key, value in pairs:
        default = g[key]
        g[key] = value.lower() in ("1", "true", "yes") if isinstance(default, bool) else type(default)(value)


SETTINGS = [k for k in list(globals()) if k.isupper()]
if __name__ == "__main__":
    apply_overrides(SETTINGS, sys.argv[1:], os.environ)

# ----------------------------------------------------------------------------------------- reward


def train_reward(response, answer):
    """Training reward of one response. Ideas may change this; evaluation always uses the scorer's grader."""
    strict = grade(response, answer).reward
    if TRAIN_REWARD == "r1_zero":
        return strict
    if TRAIN_REWARD == "lenient":
        # A 135M model never writes the R1-Zero tags unprompted, so strict rewards are all 0 and carry no
        # signal. Credit a correct last number (inside the last <answer> if any) and each tag.
        tail = response.split("<answer>")[-1].replace("</answer>", " ").replace("=", " ")
        numbers = [w.strip(".,:;!$") for w in tail.split() if w.strip(".,:;!$").lstrip("-").isdigit()]
        answered = bool(numbers) and numbers[-1] == answer.strip()
        tags = ("</think>" in response) + ("<answer>" in response) + ("</answer>" in response)
        return max(strict, 0.6 * answered + 0.1 * tags)
    raise ValueError(f"unknown TRAIN_REWARD {TRAIN_REWARD!r}; choose r1_zero or lenient")


# ------------------------------------------------------------------------------------- advantages


def group_normalized_advantages(rewards, group_size, eps=ADV_EPS, normalize_by_std=True):
    """rewards: (N,) with the group_size samples of a question adjacent -> advantages (N,).

    A = (r - mean of its group) / (std of its group + eps); std is the unbiased (n - 1) one.
    """
    grouped = rewards.view(-1, group_size)  # (N / G, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_by_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


# ----------------------------------------------------------------------------------------- losses


def masked_mean(values, mask, dim=None):
    """Mean of values where mask is 1 (over dim, or over everything); 0 where the mask is empty (an
    empty response has no tokens: it adds nothing, instead of turning the loss into 0/0)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def per_token_loss(log_probs, loss_type, rewards=None, advantages=None, old_log_probs=None, clip=CLIP_RANGE):
    """log_probs: (B, T) of the sampled tokens; rewards / advantages: (B,). Returns (loss (B, T), clipped).

    no_baseline:             -r * log p
    reinforce_with_baseline: -A * log p
    grpo_clip:               -min(ratio * A, clip(ratio, 1 - c, 1 + c) * A), ratio = p / p_old
    `clipped` (B, T) marks tokens where the clipped term was the smaller (grpo_clip only).
    """
    if loss_type == "no_baseline":
        return -rewards[:, None] * log_probs, torch.zeros_like(log_probs, dtype=torch.bool)
    if loss_type == "reinforce_with_baseline":
        return -advantages[:, None] * log_probs, torch.zeros_like(log_probs, dtype=torch.bool)
    if loss_type == "grpo_clip":
        ratio = torch.exp(log_probs - old_log_probs)
        unclipped = ratio * advantages[:, None]
        clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * advantages[:, None]
        return -torch.minimum(unclipped, clipped), clipped < unclipped
    raise ValueError(f"unknown LOSS_TYPE {loss_type!r}; choose no_baseline, reinforce_with_baseline, grpo_clip")


# ----------------------------------------------------------------------------------- tokenisation


def tokenize_prompt_and_output(prompts, outputs, tokenizer):
    """Tokenise prompt and response separately, concatenate, right-pad, shift by one for next-token loss.

    Returns input_ids (B, L-1), labels (B, L-1) and response_mask (B, L-1), where response_mask is 1
    exactly on the labels that are response tokens (L = longest prompt + response).
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs, masks = [], []
    for prompt, output in zip(prompts, outputs):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        o = tokenizer(output, add_special_tokens=False)["input_ids"]
        seqs.append(p + o)
        masks.append([0] * len(p) + [1] * len(o))
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "response_mask": mask[:, 1:]}


def response_log_probs(model, input_ids, labels):
    """log p(label_t | tokens < t) for every position: (B, T). Avoids materialising the full softmax."""
    logits = model(input_ids).logits.float()  # (B, T, V)
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


# ------------------------------------------------------------------------------------------ train


def micro_batches(n, size):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def microbatch_loss(loss_tok, response_mask):
    """The paper's reduction: one mean over ALL response tokens of the micro-batch (longer responses weigh
    more), scaled for gradient accumulation."""
    return masked_mean(loss_tok, response_mask) / GRAD_ACCUM


def train_on_rollouts(model, optimizer, tokenizer, prompts, responses, rewards, advantages, device, done=0):
    """One GRPO step's training: EPOCHS_PER_ROLLOUT passes in micro-batches, an optimiser step every
    GRAD_ACCUM micro-batches counted over the whole run (`done` micro-batches came before): a partial group
    at the end carries its gradients into the next step. Returns mean loss, clip fraction, optimiser steps
    and the micro-batches done so far."""
    chunks = micro_batches(len(responses), MICRO_BATCH)
    batches = [{k: v.to(device) for k, v in tokenize_prompt_and_output(prompts[c], responses[c], tokenizer).items()}
               for c in chunks]
    old = [None] * len(batches)
    if LOSS_TYPE == "grpo_clip":  # log-probs of the policy that sampled the rollouts
        with torch.no_grad():
            old = [response_log_probs(model, b["input_ids"], b["labels"]) for b in batches]
    losses, clip_fracs, opt_steps = [], [], 0
    for _ in range(EPOCHS_PER_ROLLOUT):
        for i, (c, b) in enumerate(zip(chunks, batches)):
            log_probs = response_log_probs(model, b["input_ids"], b["labels"])
            loss_tok, clipped = per_token_loss(
                log_probs, LOSS_TYPE, rewards[c].to(device), advantages[c].to(device), old[i], CLIP_RANGE
            )
            loss = microbatch_loss(loss_tok, b["response_mask"])
            if not torch.isfinite(loss):
                sys.exit(f"loss is {loss.item()} at micro-batch {i}: diverged")
            loss.backward()
            losses.append(loss.item() * GRAD_ACCUM)
            clip_fracs.append(masked_mean(clipped.float(), b["response_mask"]).item())
            done += 1
            if done % GRAD_ACCUM == 0:
                if GRAD_CLIP > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                opt_steps += 1
    return sum(losses) / len(losses), sum(clip_fracs) / len(clip_fracs), opt_steps, done


def metric(name, value, step):
    print(f"@metric {json.dumps({'name': name, 'value': value, 'step': step})}", flush=True)


def main():
    seed = job_seed()  # the job's IDEALAB_SEED, read by the read-only data.py: ideas cannot pin it
    random.seed(seed)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"auto": torch.bfloat16 if device == "cuda" else torch.float32,
             "bfloat16": torch.bfloat16, "float32": torch.float32}[DTYPE]
    root = data_root()
    model_path = Path(MODEL) if Path(MODEL).is_dir() else root / "models" / MODEL
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, betas=(BETA1, BETA2)
    )
    engine = make_engine(ROLLOUT_ENGINE, model, tokenizer, model_path, device, GEN_BATCH,
                         GPU_MEMORY_UTILIZATION, seed)
    template = load_prompt_template(root / "prompts" / "r1_zero.prompt")
    train_set = load_problems(root / TRAIN_SET)
    print(f"model {model_path.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M, {dtype}) on "
          f"{device}; {len(train_set)} training problems; loss {LOSS_TYPE}; reward {TRAIN_REWARD}", flush=True)
    wandb = None
    if WANDB_PROJECT:
        import wandb
        wandb.init(project=WANDB_PROJECT, config={k: globals()[k] for k in SETTINGS})

    # idealab: protected-begin (the evaluation schedule's policy snapshots)
    snapshots = PolicySnapshots(GRPO_STEPS)
    # idealab: protected-end
    done = 0  # micro-batches trained on; the optimiser steps every GRAD_ACCUM of them
    for step in range(GRPO_STEPS):
        log = {}
        # idealab: protected-begin (the evaluation schedule's policy snapshots)
        snapshots.at_step_start(step, model)
        # idealab: protected-end
        engine.sync(model)  # the engine samples this step's rollouts from the current policy
        t0 = time.time()
        questions = random.sample(train_set, ROLLOUT_PROMPTS)
        prompts = [template.format(question=q["problem"]) for q in questions]
        responses = engine.generate(prompts, n=GROUP_SIZE, temperature=TEMPERATURE, top_p=TOP_P,
                                    max_tokens=MAX_RESPONSE_LEN, stop=STOP)
        t_gen = time.time() - t0
        golds = [q["answer"] for q in questions for _ in range(GROUP_SIZE)]
        rewards = torch.tensor([float(train_reward(r, a)) for r, a in zip(responses, golds)])
        advantages = group_normalized_advantages(rewards, GROUP_SIZE, ADV_EPS, NORMALIZE_BY_STD)
        n_tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses)
        rollout_prompts = [p for p in prompts for _ in range(GROUP_SIZE)]
        loss, clip_frac, opt_steps, done = train_on_rollouts(model, optimizer, tokenizer, rollout_prompts,
                                                             responses, rewards, advantages, device, done)
        step_time = time.time() - t0
        mean_reward = rewards.mean().item()
        metric("train_reward", mean_reward, step)
        metric("train_loss", loss, step)
        print(f"step {step}/{GRPO_STEPS - 1}: reward {mean_reward:.4f} loss {loss:.4f} clip {clip_frac:.3f} "
              f"opt_steps {opt_steps} rollout {n_tokens} tok in {t_gen:.1f}s ({n_tokens / t_gen:.0f} tok/s) "
              f"step {step_time:.1f}s", flush=True)
        metric("rollout_tokens_per_s", n_tokens / t_gen, step)
        metric("step_time_s", step_time, step)
        log.update({"train/mean_reward": mean_reward, "train/loss": loss, "train/clip_fraction": clip_frac})
        if wandb is not None:
            wandb.log(log, step=step)
    print(f"sample response: {responses[0]!r}")


if __name__ == "__main__":
    main()
