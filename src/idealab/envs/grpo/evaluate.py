"""The scorer of the GRPO environment: hidden, protected, run by idealab in a fresh process after training.

    python evaluate.py        (IDEALAB_ARTEFACT_DIR holds the policy snapshots of harness.PolicySnapshots)

It owns the evaluation set, the prompt template, the sampling settings and the `@metric` lines (the
manifest keeps the maximum: the paper's "best accuracy reached during training"). For every snapshot
`policy-stepNNNN` that training left, it loads the weights with transformers from local files only, into
the base model's own configuration and generation settings (a snapshot brings weights, nothing else),
samples one response per evaluation problem with the sampling code below (never with the editable
rollout engine), grades it with the original grader (grader.py) and prints the accuracy.
No editable code is imported here. The evaluation problems are private data: training cannot read them.
"""

import glob
import json
import os
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from data import STOP, data_root, job_seed, load_problems, load_prompt_template
from grader import grade
from harness import EVAL_EVERY

TAMPERED_EXIT = 3

# ----------------------------------------------------------------------------- evaluation settings
# Fixed by the paper: sampled (not greedy) evaluation on the 500 MATH-500 problems every 2 GRPO steps
# (the schedule is harness.py's). Presets change them only through these variables (set by the manifest,
# never by an idea).
EVAL_LIMIT = int(os.environ.get("GRPO_EVAL_LIMIT", "0"))  # 0 = the whole evaluation set
EVAL_MAX_TOKENS = int(os.environ.get("GRPO_EVAL_MAX_LEN", "1024"))
EVAL_BATCH = int(os.environ.get("GRPO_EVAL_BATCH", "256"))  # prompts per generate call (speed/memory only)
GRPO_STEPS = int(os.environ.get("GRPO_GRPO_STEPS", "20"))  # the manifest's schedule: evaluations at steps
EVAL_STEPS = frozenset(range(0, GRPO_STEPS, EVAL_EVERY))  # 0, EVAL_EVERY, ... below it (the paper: 10 of 20)
EVAL_TEMPERATURE = 1.0
EVAL_TOP_P = 1.0


def eval_set_path():
    """The evaluation JSONL (fields `problem`, `answer`): MATH-500 unless a preset names another."""
    return data_root() / os.environ.get("GRPO_EVAL_SET", "math/test.jsonl")


def base_model_path():
    """The base model's directory: its configuration, tokenizer and generation settings are the
    evaluation's, whatever a snapshot carries."""
    name = os.environ.get("GRPO_MODEL", "qwen2.5-math-1.5b")
    return Path(name) if Path(name).is_dir() else data_root() / "models" / name


def dtype_for(device):
    choice = os.environ.get("GRPO_DTYPE", "auto")
    table = {"auto": torch.bfloat16 if device == "cuda" else torch.float32,
             "bfloat16": torch.bfloat16, "float32": torch.float32}
    if choice not in table:
        raise SystemExit(f"GRPO_DTYPE={choice!r}: choose auto, bfloat16 or float32")
    return table[choice]


# ------------------------------------------------------------------------------------------- sampling


def truncate_at_stop(text, stop):
    """Cut text just after the first occurrence of stop (kept), as vLLM's include_stop_str_in_output."""
    if stop and stop in text:
        return text[: text.index(stop) + len(stop)]
    return text


@torch.no_grad()
def sample(model, tokenizer, prompts, temperature, top_p, max_tokens, stop, batch_size):
    """One response per prompt: pure temperature / nucleus sampling (no top-k), at most max_tokens new
    tokens, cut right after the first `stop` (kept): the rollout engines' semantics."""
    outputs = []
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    for i in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,  # transformers defaults to top-k 50; vLLM and the paper use none
            max_new_tokens=max_tokens,
            stop_strings=[stop] if stop else None,
            tokenizer=tokenizer,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        outputs += [truncate_at_stop(t, stop) for t in texts]
    return outputs


# ----------------------------------------------------------------------------------------- evaluation


def load_policy(snapshot, base, device):
    """The base model's architecture and generation settings with the snapshot's weights; a snapshot
    whose weights do not fit that architecture exactly is not the environment's model (tampered)."""
    config = AutoConfig.from_pretrained(base, local_files_only=True)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            snapshot, config=config, dtype=dtype_for(device), local_files_only=True, output_loading_info=True,
            use_safetensors=True,  # tensors only: nothing from training is unpickled
        )
    except (OSError, RuntimeError, ValueError) as exc:  # weights of other shapes, or no safetensors file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        info, model = {"load_error": [first[:300]]}, None
    wrong = {k: v for k, v in info.items()
             if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "load_error")}
    if wrong:
        print(f"idealab-tampered: the policy saved in {os.path.basename(snapshot)} is not the base model's "
              f"architecture: {wrong}", flush=True)
        sys.exit(TAMPERED_EXIT)
    try:
        model.generation_config = GenerationConfig.from_pretrained(base, local_files_only=True)
    except OSError:  # the base model has no generation_config.json: transformers' defaults
        model.generation_config = GenerationConfig()
    return model.to(device).eval()


def evaluate(model, tokenizer, template, problems, step, seed):
    """Sample one response per evaluation problem, grade it, print the metric; returns a summary."""
    torch.manual_seed(seed * 1000 + step)  # each evaluation its own draw, reproducible from the job's seed
    prompts = [template.format(question=row["problem"]) for row in problems]
    responses = sample(model, tokenizer, prompts, EVAL_TEMPERATURE, EVAL_TOP_P, EVAL_MAX_TOKENS, STOP, EVAL_BATCH)
    grades = [grade(r, row["answer"]) for r, row in zip(responses, problems)]
    accuracy = sum(g.reward for g in grades) / len(grades)
    format_rate = sum(g.format_reward for g in grades) / len(grades)
    print(f'@metric {json.dumps({"name": "eval_accuracy", "value": accuracy, "step": step})}', flush=True)
    print(f'@metric {json.dumps({"name": "eval_format_rate", "value": format_rate, "step": step})}')
    print(f"eval step {step}: accuracy {accuracy:.4f} format {format_rate:.4f} on {len(grades)} problems", flush=True)
    return {"accuracy": accuracy, "format_rate": format_rate, "n": len(grades), "example": responses[0]}


def snapshots(artefact_dir):
    """(evaluation step, directory) of every complete snapshot, in step order."""
    found = []
    for path in sorted(glob.glob(os.path.join(artefact_dir, "policy-step*"))):
        suffix = os.path.basename(path)[len("policy-step"):]
        if os.path.isdir(path) and suffix.isdigit():
            found.append((int(suffix), path))
    return found


def off_schedule(found):
    """Snapshots the schedule has no evaluation for: more evaluations would raise the maximum by chance
    alone, so they are tampering, not more data."""
    return [step for step, _ in found if step not in EVAL_STEPS]


def main():
    artefact_dir = os.environ.get("IDEALAB_ARTEFACT_DIR") or os.environ.get("IDEALAB_OUTPUT_DIR") or "grpo-output"
    found = snapshots(artefact_dir)
    if not found:
        raise SystemExit(f"no policy snapshots (policy-stepNNNN) in {artefact_dir}: nothing to evaluate")
    extra = off_schedule(found)
    if extra:
        print(f"idealab-tampered: policy snapshots of steps {extra}, which the evaluation schedule (every "
              f"{EVAL_EVERY} of {GRPO_STEPS} steps) has no evaluation for", flush=True)
        sys.exit(TAMPERED_EXIT)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = load_prompt_template(data_root() / "prompts" / "r1_zero.prompt")
    problems = load_problems(eval_set_path(), EVAL_LIMIT)
    seed = job_seed()
    print(f"scoring {len(found)} snapshots on {len(problems)} problems ({device})", flush=True)
    for step, path in found:
        model = load_policy(path, base, device)
        result = evaluate(model, tokenizer, template, problems, step, seed)
        print(f"example response (step {step}): {result['example']!r}", flush=True)
        del model


if __name__ == "__main__":
    main()
