"""Data loading for the GRPO environment (read-only: ideas may read it, not change it).

Problems are JSONL rows with at least `problem` and `answer` (the MATH files also carry `subject`,
`level`, `unique_id`, and the test file a worked `solution`). Everything is read from local paths;
`math_from_hub` is the one function that downloads, for users with internet, and only prepare.py
calls it.
"""

import json
import os
import re
from pathlib import Path


STOP = "</answer>"  # the R1-Zero answer's end: sampling (rollouts and evaluation) stops after it, keeping it


def data_root():
    """$GRPO_DATA_DIR, else $IDEALAB_DATA_DIR/grpo, else ~/.cache/idealab/grpo (what prepare.py fills)."""
    if os.environ.get("GRPO_DATA_DIR"):
        return Path(os.environ["GRPO_DATA_DIR"]).expanduser()
    base = os.environ.get("IDEALAB_DATA_DIR") or str(Path.home() / ".cache" / "idealab")
    return Path(base).expanduser() / "grpo"


def job_seed():
    """The run's seed: idealab gives every job its own IDEALAB_SEED (baseline repeats and confirmation
    runs differ only in it). Read here, in the read-only part, so an idea cannot pin a lucky seed."""
    return int(os.environ.get("IDEALAB_SEED", "42"))


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def normalize_level(level):
    """MATH levels come as "Level 3" (train) or 3 (test); unknown ones ("Level ?") become None."""
    if isinstance(level, int):
        return level
    m = re.search(r"\d+", str(level or ""))
    return int(m.group()) if m else None


def load_problems(path, limit=0):
    """Rows with `problem` and `answer` (strings) and a normalised integer `level` where present."""
    rows = load_jsonl(path)
    for i, row in enumerate(rows):
        if not isinstance(row.get("problem"), str) or not isinstance(row.get("answer"), str):
            raise ValueError(f"{path}: row {i} lacks a string 'problem' and 'answer'")
        if "level" in row:
            row["level"] = normalize_level(row["level"])
    return rows[:limit] if limit > 0 else rows


def load_prompt_template(path):
    text = Path(path).read_text()
    if "{question}" not in text:
        raise ValueError(f"{path}: a prompt template needs a {{question}} slot")
    return text


def write_jsonl(rows, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)  # atomic: a half-written file never looks prepared


def math_from_hub(split, source=None):
    """MATH rows through the `datasets` library (internet, or `source`: a local JSON/JSONL file).

    test: HuggingFaceH4/MATH-500 (has `answer`); train: EleutherAI/hendrycks_math, whose answer is
    the last \\boxed{} of the worked solution.
    """
    import datasets  # optional dependency (idealab[data])

    from grader import last_boxed

    if source is not None:
        ds = datasets.load_dataset("json", data_files=str(source), split="train")
    elif split == "test":
        ds = datasets.load_dataset("HuggingFaceH4/MATH-500", split="test")
    else:
        subjects = datasets.get_dataset_config_names("EleutherAI/hendrycks_math")
        ds = datasets.concatenate_datasets(
            [datasets.load_dataset("EleutherAI/hendrycks_math", s, split=split) for s in subjects]
        )
    rows = []
    for i, ex in enumerate(ds):
        answer = ex.get("answer") or last_boxed(ex.get("solution", "")) or ""
        rows.append({
            "problem": ex["problem"],
            "answer": answer,
            "subject": ex.get("subject") or ex.get("type", ""),
            "level": normalize_level(ex.get("level")),
            "unique_id": ex.get("unique_id") or f"{split}/{i}",
        })
    return [r for r in rows if r["answer"]]


def arithmetic_problems(n, seed):
    """Easy arithmetic (reasoning-gym `basic_arithmetic`), generated offline and deterministically."""
    import reasoning_gym

    ds = reasoning_gym.create_dataset(
        "basic_arithmetic", size=n, seed=seed, min_terms=2, max_terms=2, min_digits=1, max_digits=1
    )
    return [
        {"problem": ex["question"], "answer": str(ex["answer"]), "unique_id": f"arith/{seed}/{i}"}
        for i, ex in enumerate(ds)
    ]
