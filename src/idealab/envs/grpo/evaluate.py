"""Evaluation of the GRPO environment. This file is HIDDEN and PROTECTED.

It is never shown to ideas and must stay byte-identical (the orchestrator hashes it). It owns:
  - the evaluation set, the prompt template, the sampling settings and the evaluation schedule;
  - the `@metric {"name": "eval_accuracy", ...}` line the orchestrator reads (reduce = max).
The grader (grader.py, equally hidden) is the original's: the same function gives training rewards.

The training loop calls `evaluate(generate, step)` with a callable
`generate(prompts, temperature=, top_p=, max_tokens=, stop=) -> list[str]` and nothing else; the
training reward (in grpo.py) may be changed by ideas, this one may not.
"""

import json
import os
from pathlib import Path

from grader import Grade, grade, last_boxed  # noqa: F401 (re-exported: the trainer calls evaluate.grade)

# ----------------------------------------------------------------------------- evaluation settings
# Fixed by the paper: sampled (not greedy) evaluation on the 500 MATH-500 problems every 2 GRPO steps,
# at the start of a step, before its rollouts (steps 0, 2, ..., 18 of 20: the base model is evaluated, the
# policy after the last updates never is), with the weights the rollout engine holds at that moment.
# Presets change them only through these variables (set by the manifest, never by an idea).
EVAL_EVERY = int(os.environ.get("GRPO_EVAL_EVERY", "2"))
EVAL_LIMIT = int(os.environ.get("GRPO_EVAL_LIMIT", "0"))  # 0 = the whole evaluation set
EVAL_MAX_TOKENS = int(os.environ.get("GRPO_EVAL_MAX_LEN", "1024"))
EVAL_TEMPERATURE = 1.0
EVAL_TOP_P = 1.0
STOP = "</answer>"


def data_root():
    """$GRPO_DATA_DIR, else $IDEALAB_DATA_DIR/grpo, else ~/.cache/idealab/grpo (what prepare.py fills)."""
    if os.environ.get("GRPO_DATA_DIR"):
        return Path(os.environ["GRPO_DATA_DIR"]).expanduser()
    base = os.environ.get("IDEALAB_DATA_DIR") or str(Path.home() / ".cache" / "idealab")
    return Path(base).expanduser() / "grpo"


def eval_set_path():
    """The evaluation JSONL (fields `problem`, `answer`): MATH-500 unless a preset names another."""
    return data_root() / os.environ.get("GRPO_EVAL_SET", "math/test.jsonl")


def load_prompt_template():
    return (data_root() / "prompts" / "r1_zero.prompt").read_text()


def should_evaluate(step):
    """Evaluate at the start of GRPO step `step` (0-based), before its rollouts: steps 0, 2, 4, ..."""
    return step % EVAL_EVERY == 0


# ----------------------------------------------------------------------------------- evaluation


def load_eval_set():
    rows = [json.loads(line) for line in eval_set_path().read_text().splitlines() if line.strip()]
    return rows[:EVAL_LIMIT] if EVAL_LIMIT > 0 else rows


def evaluate(generate, step):
    """Sample one response per evaluation problem, grade it, print the metric; returns a summary."""
    template = load_prompt_template()
    problems = load_eval_set()
    prompts = [template.format(question=row["problem"]) for row in problems]
    responses = generate(
        prompts, temperature=EVAL_TEMPERATURE, top_p=EVAL_TOP_P, max_tokens=EVAL_MAX_TOKENS, stop=STOP
    )
    if len(responses) != len(prompts):
        raise RuntimeError(f"generate returned {len(responses)} responses for {len(prompts)} prompts")
    grades = [grade(r, row["answer"]) for r, row in zip(responses, problems)]
    accuracy = sum(g.reward for g in grades) / len(grades)
    format_rate = sum(g.format_reward for g in grades) / len(grades)
    print(f'@metric {json.dumps({"name": "eval_accuracy", "value": accuracy, "step": step})}', flush=True)
    print(f'@metric {json.dumps({"name": "eval_format_rate", "value": format_rate, "step": step})}')
    print(f"eval step {step}: accuracy {accuracy:.4f} format {format_rate:.4f} on {len(grades)} problems")
    return {"accuracy": accuracy, "format_rate": format_rate, "n": len(grades), "example": responses[0]}
