"""Evaluation and its grader for the GRPO environment. This file is HIDDEN and PROTECTED.

It is never shown to ideas and must stay byte-identical (the orchestrator hashes it). It owns:
  - the strict R1-Zero grader: `grade(response, gold)`, format check first, then answer equivalence
    (our own MATH normalisation, then `math-verify` for symbolic equivalence);
  - the evaluation set, the prompt template, the sampling settings and the evaluation frequency;
  - the `@metric {"name": "eval_accuracy", ...}` line the orchestrator reads (reduce = max).

The training loop calls `evaluate(generate, step)` with a callable
`generate(prompts, temperature=, top_p=, max_tokens=, stop=) -> list[str]` and nothing else; the
training reward (in grpo.py) may be changed by ideas, this one may not.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# ----------------------------------------------------------------------------- evaluation settings
# Fixed by the paper: sampled (not greedy) evaluation on the 500 MATH-500 problems every 2 GRPO steps.
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


def should_evaluate(step, total_steps):
    """Evaluate after every EVAL_EVERY-th GRPO step (1-based) and after the last one."""
    return step % EVAL_EVERY == 0 or step == total_steps


# ------------------------------------------------------------------------------------ extraction


def last_boxed(text):
    """Content of the last \\boxed{...} (or \\fbox{...}, or `\\boxed x`) in text, braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text.startswith(" ", i):  # "\boxed 5": the argument runs to the next $ or the end
        return text[i + 1 :].split("$")[0].strip()
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_answer(response):
    """The answer of a strictly formatted R1-Zero response, or None when the format is wrong.

    Format: the response (what follows `Assistant: <think>`) contains `</think> <answer>` and `</answer>`.
    The answer is the text of the last <answer>...</answer>, or the content of its last \\boxed{}.
    """
    if "</think> <answer>" not in response or "</answer>" not in response:
        return None
    inside = response.split("<answer>")[-1].split("</answer>")[0]
    boxed = last_boxed(inside) if "\\boxed" in inside or "\\fbox" in inside else None
    return (boxed if boxed is not None else inside).strip()


# ------------------------------------------------------------------------------ normalisation
# Our own normaliser for MATH answers: it makes formatting variants of the same answer identical as
# strings (so gold answers match themselves cheaply and surely); math-verify then decides symbolic
# equivalence of the rest.

_UNIT_WORDS = (
    "units?|degrees?|cm|centimeters?|meters?|m|km|inches|inch|in|feet|foot|ft|miles?|mph|hours?|"
    "minutes?|seconds?|sq|square|cubic|dollars?|cents?|pounds?|lbs?|ounces?|days?|weeks?|years?|"
    "people|students|ways|points?|mm|kg|g|liters?|gallons?|yards?|percent"
)
_TEXT_UNIT = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{\s*(?:" + _UNIT_WORDS + r")(?:\^?\{?[23]\}?)?\s*\}")
_BARE_UNIT = re.compile(r"(?<=[\d}])\s*(?:" + _UNIT_WORDS + r")(?:\^?\{?[23]\}?)?\s*$")
_FRAC_SHORT = re.compile(r"\\frac(\d)(\d)")  # \frac12 -> \frac{1}{2}
_FRAC_HALF = re.compile(r"\\frac\{([^{}]*)\}(\d)")  # \frac{a}2 -> \frac{a}{2}
_FRAC_LEAD = re.compile(r"\\frac(\d)\{")  # \frac1{x} -> \frac{1}{x}
_SQRT_SHORT = re.compile(r"\\sqrt(\w)")  # \sqrt2 -> \sqrt{2}
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mbox|mathrm|mathbf|textnormal)\{([^{}]*)\}")
_SLASH_FRAC = re.compile(r"^(-?\d+)/(\d+)$")
_VAR_PREFIX = re.compile(r"^[a-zA-Z]\w*(?:\([a-z]\))?=(?!=)")
_NUM_COMMAS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _strip_outer_braces(s):
    while s.startswith("{") and s.endswith("}") and _balanced(s[1:-1]):
        s = s[1:-1]
    return s


def _balanced(s):
    depth = 0
    for ch in s:
        depth += ch == "{"
        depth -= ch == "}"
        if depth < 0:
            return False
    return depth == 0


def normalize(answer):
    """Canonical string form of a MATH answer (not a proof of equivalence, only of sameness)."""
    s = answer.strip().replace("\n", "").rstrip(".").strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _TEXT_UNIT.sub("", s).strip()
    s = _BARE_UNIT.sub("", s).strip()
    s = _TEXT_WRAP.sub(r"\1", s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_LEAD.sub(r"\\frac{\1}{", s)
    s = _FRAC_HALF.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _NUM_COMMAS.sub("", s)  # 10,000 -> 10000 (a tuple "1,2" keeps its comma: no 3-digit group)
    s = s.replace(" ", "")
    s = _VAR_PREFIX.sub("", s)  # "x=3" -> "3"; "f(x)=..." -> "..."
    s = _strip_outer_braces(s)
    if s.startswith("."):
        s = "0" + s
    s = s.replace("{.", "{0.").replace("-.", "-0.")
    if re.fullmatch(r"-?\d+\.0+", s):  # "5.00" -> "5"
        s = s.split(".")[0]
    m = _SLASH_FRAC.match(s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s


# --------------------------------------------------------------------------------- equivalence


def _symbolically_equal(pred, gold):
    """math-verify: parse both as LaTeX and compare values (sets, intervals, tuples, expressions).

    Its default 5 s timeouts use SIGALRM, so grading runs in the main thread (it does here).
    """
    from math_verify import parse, verify  # imported lazily: normalised matches never need it

    try:
        gold_parsed = parse("$" + gold + "$")
        pred_parsed = parse("$" + pred + "$")
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed))
    except Exception as exc:  # a parser or sympy failure on odd input is a wrong answer, not a crash
        print(f"grader: math-verify failed on {pred!r} vs {gold!r}: {type(exc).__name__}: {exc}")
        return False


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_INT_FRAC = re.compile(r"\\frac\{(-?\d+)\}\{(\d+)\}")


def answers_match(pred, gold):
    if pred is None or not pred.strip():
        return False
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    if _NUMBER.fullmatch(g):
        # A plain-number gold needs a plain-number answer (a decimal gold may also be met by a fraction
        # of integers): else math-verify accepts an unsimplified expression ("-6 / 3" for -2), which a
        # policy learns to copy from the question.
        if _NUMBER.fullmatch(p):
            return float(p) == float(g)
        frac = _INT_FRAC.fullmatch(p)
        return bool(frac) and "." in g and int(frac.group(2)) != 0 and (
            int(frac.group(1)) / int(frac.group(2)) == float(g)
        )
    if p.lower() == g.lower():  # "\text{Monday}" vs "monday"
        return True
    return _symbolically_equal(p, g) or _symbolically_equal(pred, gold)


@dataclass
class Grade:
    format_reward: float
    answer_reward: float
    reward: float


def grade(response, gold):
    """Reward of one response: 1 only when strictly formatted AND the answer matches the gold."""
    answer = extract_answer(response)
    if answer is None:
        return Grade(0.0, 0.0, 0.0)
    correct = answers_match(answer, gold)
    return Grade(1.0, float(correct), float(correct))


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
