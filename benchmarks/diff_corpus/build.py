"""Writes the diff-application corpus: `cases/<name>/` with case.toml, response.md and expected/.

Each case starts from base files in `bases/`, a model-style response (prose, fences, the malformation
named by `kind`) and the intended result, computed here by plain string replacement on the base text, so
that the expected files never depend on any applier. Must-refuse cases have no expected/ directory.

    python benchmarks/diff_corpus/build.py      # rewrites cases/ (deterministic)
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASES = HERE / "bases"
CASES = HERE / "cases"

EVALUATE = '''"""Held-out evaluation: exact-match accuracy of boxed answers."""

import re


def extract_boxed(text):
    match = re.search(r"\\\\boxed\\{([^{}]*)\\}", text)
    return match.group(1).strip() if match else None


def normalise(answer):
    answer = answer.replace(" ", "").replace("\\\\!", "")
    if answer.endswith(".0"):
        answer = answer[:-2]
    return answer.lower()


def score(response, truth):
    predicted = extract_boxed(response)
    if predicted is None:
        return 0.0
    return 1.0 if normalise(predicted) == normalise(truth) else 0.0
'''

CONFIG = """# run configuration for the debug preset
seed = 1337
num_workers = 4
log_every = 10
compile_model = False
eval_batches = 8"""  # no final newline, as some editors leave it


@dataclass
class Case:
    name: str
    kind: str
    files: dict[str, str]  # path in the environment -> base file name
    response: str
    expected: dict[str, str | None] | None  # path -> text after the edit (None: deleted); None: refuse
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def base(name: str) -> str:
    return (BASES / name).read_bytes().decode("utf-8")


def edit(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert text.count(old) == 1, f"edit anchor must occur once: {old!r}"
        text = text.replace(old, new)
    return text


def udiff(path: str, old: str, new: str, n: int = 3, prefix: bool = True) -> str:
    a, b = (f"a/{path}", f"b/{path}") if prefix else (path, path)
    out = []
    for line in difflib.unified_diff(old.splitlines(True), new.splitlines(True), a, b, n=n):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def fence(diff: str, lang: str = "diff") -> str:
    return f"```{lang}\n{diff}```\n"


def reply(intro: str, *parts: str, outro: str = "") -> str:
    text = intro.strip() + "\n\n" + "\n".join(parts)
    return text + ("\n" + outro.strip() + "\n" if outro else "")


def headers(diff: str, fn) -> str:  # rewrite every @@ header with fn(old_start, old_len, new_start, new_len)
    def sub(m: re.Match[str]) -> str:
        a, b, c, d = (int(g) if g else 1 for g in m.groups())
        a, b, c, d = fn(a, b, c, d)
        return f"@@ -{a},{b} +{c},{d} @@"

    return re.sub(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", sub, diff, flags=re.M)


def bare(diff: str) -> str:
    return diff.replace("--- a/", "--- ").replace("+++ b/", "+++ ")


def unspace_blanks(diff: str) -> str:
    return re.sub(r"^ $", "", diff, flags=re.M)


def hunks_of(diff: str) -> tuple[str, list[str]]:
    head, *rest = re.split(r"(?m)^(?=@@)", diff)
    return head, rest


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


TRAIN, GRPO = base("train.py"), base("grpo.py")

# -- the intended edits, reused by several cases -------------------------------------------------------
LR = [("learning_rate = 6e-4\n", "learning_rate = 1e-3\n"), ("warmup_iters = 100\n", "warmup_iters = 200\n")]
RELU2 = [("        x = F.gelu(x)\n", "        x = F.relu(x).square()  # ReLU^2 activation\n")]
QK_NORM = [
    (
        "        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n",
        "        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"
        "        # QK-norm: unit-normalise queries and keys per head, scaled back by sqrt(head size)\n"
        "        q = F.normalize(q, dim=-1) * math.sqrt(C // self.n_head)\n"
        "        k = F.normalize(k, dim=-1)\n",
    )
]
WSD = [
    (
        "    ratio = (it - warmup_iters) / max(1, max_iters - warmup_iters)\n"
        "    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))\n"
        "    return learning_rate * (0.1 + 0.9 * coeff)\n",
        "    # warmup-stable-decay: hold the peak, then decay linearly over the last 20% of steps\n"
        "    decay_start = int(0.8 * max_iters)\n"
        "    if it < decay_start:\n"
        "        return learning_rate\n"
        "    ratio = (it - decay_start) / max(1, max_iters - decay_start)\n"
        "    return learning_rate * (1.0 - 0.9 * ratio)\n",
    )
]
ZERO_INIT = [
    (
        "        self.apply(self._init_weights)\n",
        "        self.apply(self._init_weights)\n"
        "        # zero-init the output projections so every block starts as the identity\n"
        "        for block in self.blocks:\n"
        "            torch.nn.init.zeros_(block.attn.c_proj.weight)\n"
        "            torch.nn.init.zeros_(block.mlp.c_proj.weight)\n",
    )
]
GRAD_CLIP_LOG = [
    (
        "            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)\n",
        "            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)\n"
        "            if it % 100 == 0:\n"
        '                print(f"step {it}: grad norm {norm:.3f}")\n',
    )
]
CLIP = [("cliprange = 0.2\n", "cliprange = 0.28\n")]
ADV_NO_STD = [
    (
        "    std = grouped.std(dim=1, keepdim=True)\n    advantages = (grouped - mean) / (std + eps)\n",
        "    # Dr. GRPO: do not divide by the group std (it over-weights near-uniform groups)\n"
        "    advantages = grouped - mean\n",
    )
]
TOKEN_MEAN = [
    (
        "    return masked_mean(per_token, response_mask)\n",
        "    # average over all response tokens of the micro-batch, not per sequence\n"
        "    return (per_token * response_mask).sum() / response_mask.sum().clamp(min=1)\n",
    )
]
ENTROPY = [
    (
        "        loss = loss / gradient_accumulation_steps\n",
        '        entropy_bonus = 0.001 * -(log_probs * batch["response_mask"][start:end]).mean()\n'
        "        loss = (loss - entropy_bonus) / gradient_accumulation_steps\n",
    )
]
LAYER_SCALE_INTRO = "I'll implement the idea with a minimal change. Here is the diff:"


def must_replace(text: str, old: str, new: str) -> str:
    assert old in text, f"not in the diff: {old!r}"
    return text.replace(old, new)


def train_case(name: str, kind: str, pairs, make, note: str = "") -> Case:
    """A case editing train.py: make(clean_diff_with_prefixes, new_text) -> response."""
    new = edit(TRAIN, *pairs)
    return Case(name, kind, {"train.py": "train.py"}, make(udiff("train.py", TRAIN, new), new), {"train.py": new}, note)


def grpo_case(name: str, kind: str, pairs, make, note: str = "") -> Case:
    new = edit(GRPO, *pairs)
    return Case(name, kind, {"grpo.py": "grpo.py"}, make(udiff("grpo.py", GRPO, new), new), {"grpo.py": new}, note)


def refuse(name: str, kind: str, files: dict[str, str], response: str, note: str) -> Case:
    return Case(name, kind, files, response, None, note)


def apply_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # -- well-formed controls ------------------------------------------------------------------------
    add(
        train_case(
            "clean_fenced",
            "clean",
            LR,
            lambda d, _: reply(
                "To test a higher peak learning rate with a longer warmup:",
                fence(d),
                outro="The longer warmup keeps the first steps stable at the higher rate.",
            ),
        )
    )
    add(
        grpo_case(
            "clean_git_function_context",
            "clean",
            TOKEN_MEAN,
            lambda d, _: reply(
                "Token-level averaging:",
                fence(
                    re.sub(
                        r"(?m)^(@@ .* @@)$",
                        r"\1 def policy_loss(log_probs, old_log_probs, advantages, response_mask):",
                        d,
                    )
                ),
            ),
        )
    )
    # -- framing: fences, prose, headers -------------------------------------------------------------
    add(
        grpo_case(
            "unfenced_prose",
            "prose_around",
            CLIP,
            lambda d, _: reply(
                "Raise the upper clip range (clip-higher) to keep exploration alive.\n\nHere is the patch:",
                d,
                outro="This only touches the hyperparameter block.",
            ),
        )
    )
    add(
        train_case(
            "bare_paths",
            "bare_paths",
            RELU2,
            lambda d, _: reply("Replace GELU by squared ReLU in the MLP:", fence(bare(d))),
        )
    )
    add(
        train_case(
            "dot_slash_paths",
            "bare_paths",
            LR,
            lambda d, _: reply("Changes:", fence(d.replace("--- a/", "--- ./").replace("+++ b/", "+++ ./"))),
        )
    )
    add(
        train_case(
            "dir_prefix_paths",
            "path_prefix",
            RELU2,
            lambda d, _: reply(
                "Patch for the nanogpt environment:",
                fence(d.replace("--- a/", "--- a/envs/nanogpt/").replace("+++ b/", "+++ b/envs/nanogpt/")),
            ),
        )
    )
    add(
        train_case(
            "header_timestamps",
            "path_prefix",
            WSD,
            lambda d, _: reply(
                "Generated with `diff -u`:",
                fence(
                    d.replace("--- a/train.py\n", "--- train.py.orig\t2025-11-02 10:14:07.000000000 +0000\n").replace(
                        "+++ b/train.py\n", "+++ train.py\t2025-11-02 10:16:31.000000000 +0000\n"
                    )
                ),
            ),
        )
    )
    add(
        train_case(
            "git_extended_headers",
            "clean",
            ZERO_INIT,
            lambda d, _: reply(
                "Zero-init residual projections:",
                fence("diff --git a/train.py b/train.py\nindex 3b18e51..a9c2f07 100644\n" + d),
            ),
        )
    )
    add(
        train_case(
            "only_plus_header",
            "missing_header_line",
            LR,
            lambda d, _: reply("Diff:", fence(d.replace("--- a/train.py\n", ""))),
        )
    )
    add(train_case("unclosed_fence", "prose_around", RELU2, lambda d, _: "Here you go:\n\n```diff\n" + d))
    add(
        train_case(
            "python_block_then_diff",
            "prose_around",
            QK_NORM,
            lambda d, _: reply(
                "QK-norm normalises queries and keys before the dot product:",
                fence("q = F.normalize(q, dim=-1) * math.sqrt(head_size)\nk = F.normalize(k, dim=-1)\n", "python"),
                "The full change:",
                fence(d, "patch"),
            ),
        )
    )
    add(
        train_case(
            "fence_per_hunk",
            "prose_around",
            LR + GRAD_CLIP_LOG,
            lambda d, _: reply(
                "First the hyperparameters:",
                fence(hunks_of(d)[0] + hunks_of(d)[1][0]),
                "Then log the gradient norm every 100 steps:",
                fence(hunks_of(d)[1][1]),
            ),
        )
    )
    # -- hunk headers ----------------------------------------------------------------------------------
    add(
        train_case(
            "counts_too_small",
            "wrong_counts",
            QK_NORM,
            lambda d, _: reply("Patch:", fence(headers(d, lambda a, b, c, e: (a, b, c, e - 3)))),
        )
    )
    add(
        train_case(
            "counts_too_large",
            "wrong_counts",
            ZERO_INIT,
            lambda d, _: reply("Patch:", fence(headers(d, lambda a, b, c, e: (a, b + 2, c, e + 4)))),
        )
    )
    add(
        grpo_case(
            "counts_wrong_multi_hunk",
            "wrong_counts",
            CLIP + ENTROPY,
            lambda d, _: reply("Two small changes:", fence(headers(d, lambda a, b, c, e: (a, 6, c, 6)))),
        )
    )
    add(
        train_case(
            "line_numbers_shifted",
            "wrong_line_numbers",
            LR + WSD,
            lambda d, _: reply("Patch:", fence(headers(d, lambda a, b, c, e: (a + 17, b, c + 17, e)))),
        )
    )
    add(
        train_case(
            "line_numbers_random",
            "wrong_line_numbers",
            RELU2 + ZERO_INIT + GRAD_CLIP_LOG,
            lambda d, _: reply("Patch:", fence(_scramble_numbers(d))),
        )
    )
    add(
        grpo_case(
            "line_numbers_zero",
            "wrong_line_numbers",
            ADV_NO_STD,
            lambda d, _: reply("Dr. GRPO style advantages:", fence(headers(d, lambda a, b, c, e: (1, b, 1, e)))),
        )
    )
    add(
        train_case(
            "no_line_numbers",
            "no_line_numbers",
            WSD,
            lambda d, _: reply("Patch:", fence(re.sub(r"(?m)^@@ .* @@$", "@@ ... @@", d))),
        )
    )
    add(
        grpo_case(
            "bare_at_at",
            "no_line_numbers",
            TOKEN_MEAN + ENTROPY,
            lambda d, _: reply("Patch:", fence(re.sub(r"(?m)^@@ .* @@$", "@@", d))),
        )
    )
    add(
        train_case(
            "hunks_out_of_order",
            "hunks_out_of_order",
            LR + GRAD_CLIP_LOG,
            lambda d, _: reply("Patch:", fence(hunks_of(d)[0] + hunks_of(d)[1][1] + hunks_of(d)[1][0])),
        )
    )
    add(
        train_case(
            "hunks_reversed_three",
            "hunks_out_of_order",
            LR + RELU2 + WSD,
            lambda d, _: reply("Patch:", fence(hunks_of(d)[0] + "".join(reversed(hunks_of(d)[1])))),
        )
    )
    # -- hunk bodies -----------------------------------------------------------------------------------
    add(
        train_case(
            "blank_context_unspaced",
            "blank_context_unspaced",
            ZERO_INIT,
            lambda d, _: reply("Patch:", fence(unspace_blanks(d))),
        )
    )
    add(
        train_case(
            "blank_context_unspaced_multi",
            "blank_context_unspaced",
            LR + WSD + GRAD_CLIP_LOG,
            lambda d, _: reply("Patch:", fence(unspace_blanks(d))),
        )
    )
    add(
        train_case(
            "context_trailing_spaces",
            "whitespace_drift",
            RELU2,
            lambda d, _: reply("Patch:", fence(re.sub(r"(?m)^( .*\S)$", r"\1   ", d))),
        )
    )
    add(train_case("context_tabs", "whitespace_drift", GRAD_CLIP_LOG, lambda d, _: reply("Patch:", fence(_tabify(d)))))
    add(
        grpo_case(
            "context_tabs_and_added_tabs",
            "whitespace_drift",
            ENTROPY,
            lambda d, _: reply("Patch:", fence(_tabify(d, added=True))),
        )
    )
    add(
        train_case(
            "context_two_space_indent",
            "whitespace_drift",
            ZERO_INIT,
            lambda d, _: reply("Patch:", fence(_reindent(d, 2))),
        )
    )
    add(
        train_case(
            "removed_line_spacing",
            "whitespace_drift",
            RELU2,
            lambda d, _: reply(
                "Patch:", fence(must_replace(d, "-        x = F.gelu(x)\n", "-        x  = F.gelu(x)  \n"))
            ),
        )
    )
    add(train_case("crlf_response", "crlf", LR + RELU2, lambda d, _: crlf(reply("Patch:", fence(d)))))
    add(
        train_case(
            "reduced_context_one",
            "reduced_context",
            QK_NORM + WSD,
            lambda d, new: reply("Patch:", fence(udiff("train.py", TRAIN, new, n=1))),
        )
    )
    add(
        train_case(
            "zero_context",
            "reduced_context",
            LR + RELU2,
            lambda d, new: reply("Patch (no context):", fence(udiff("train.py", TRAIN, new, n=0))),
        )
    )
    add(
        train_case(
            "two_sections_same_file",
            "several_sections",
            LR + GRAD_CLIP_LOG,
            lambda d, _: reply(
                "First:",
                fence(hunks_of(d)[0] + hunks_of(d)[1][0]),
                "And separately:",
                fence(hunks_of(d)[0] + hunks_of(d)[1][1]),
            ),
        )
    )
    add(
        train_case(
            "repeated_context_right_line",
            "clean",
            [
                (
                    "        elif isinstance(module, nn.Embedding):\n"
                    "            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)\n",
                    "        elif isinstance(module, nn.Embedding):\n"
                    "            torch.nn.init.normal_(module.weight, mean=0.0, std=0.01)\n",
                )
            ],
            lambda d, new: reply("Smaller embedding init:", fence(udiff("train.py", TRAIN, new, n=0))),
            note="the removed line occurs twice; the header's line number picks the right one",
        )
    )
    add(
        train_case(
            "combined_counts_numbers_blanks",
            "combined",
            QK_NORM + ZERO_INIT,
            lambda d, _: reply(
                "Patch:", fence(unspace_blanks(headers(d, lambda a, b, c, e: (a - 9, b + 1, c - 9, e - 1))))
            ),
        )
    )
    add(
        train_case(
            "combined_bare_nonumbers_ws",
            "combined",
            RELU2 + LR,
            lambda d, _: reply(
                "Patch:", fence(re.sub(r"(?m)^( .*\S)$", r"\1 ", re.sub(r"(?m)^@@ .* @@$", "@@ @@", bare(d))))
            ),
        )
    )
    add(
        grpo_case(
            "combined_tabs_counts_order",
            "combined",
            CLIP + TOKEN_MEAN,
            lambda d, _: reply(
                "Patch:",
                fence(
                    headers(
                        _tabify(hunks_of(d)[0] + "".join(reversed(hunks_of(d)[1]))),
                        lambda a, b, c, e: (a, b - 2, c, e - 2),
                    )
                ),
            ),
        )
    )
    add(
        train_case(
            "unprefixed_context_lines",
            "blank_context_unspaced",
            LR,
            lambda d, _: reply("Patch:", fence(re.sub(r"(?m)^ (?=[a-z#])", "", d))),
            note="top-level context lines lost their leading space",
        )
    )
    add(
        grpo_case(
            "unfenced_then_bullets",
            "prose_around",
            CLIP,
            lambda d, _: reply(
                "Patch:",
                d,
                outro="- Raises the upper clip bound only.\n- Keeps the evaluation untouched.",
            ),
        )
    )
    add(
        train_case(
            "no_hunk_header_line",
            "no_line_numbers",
            RELU2,
            lambda d, _: reply("Patch:", fence(re.sub(r"(?m)^@@ .* @@\n", "", d))),
        )
    )
    add(
        train_case(
            "continuation_fence_without_header",
            "prose_around",
            LR + GRAD_CLIP_LOG,
            lambda d, _: reply(
                "Hyperparameters:",
                fence(hunks_of(d)[0] + hunks_of(d)[1][0]),
                "and in the training loop:",
                fence(re.sub(r"(?m)^@@ .* @@\n", "", hunks_of(d)[1][1])),
            ),
        )
    )
    return cases


def _scramble_numbers(diff: str) -> str:
    offsets = iter([31, -12, 44, -5])
    return headers(diff, lambda a, b, c, e: (max(1, a + (k := next(offsets))), b, max(1, c + k), e))


def _tabify(diff: str, added: bool = False) -> str:
    kinds = " -+" if added else " -"

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in kinds:
            return m.group(0)
        return m.group(1) + "\t" * (len(m.group(2)) // 4) + " " * (len(m.group(2)) % 4)

    return re.sub(r"(?m)^([ +-])( +)(?=\S)", sub, diff)


def _reindent(diff: str, width: int) -> str:
    def sub(m: re.Match[str]) -> str:
        return m.group(1) + " " * (len(m.group(2)) // 4 * width)

    return re.sub(r"(?m)^([ +-])( +)(?=\S)", sub, diff)


def more_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    both = {"train.py": "train.py", "grpo.py": "grpo.py"}
    train_new, grpo_new = edit(TRAIN, *RELU2), edit(GRPO, *CLIP)
    add(
        Case(
            "multi_file_two_fences",
            "several_files",
            both,
            reply(
                "The MLP change:",
                fence(udiff("train.py", TRAIN, train_new)),
                "And the clip range:",
                fence(udiff("grpo.py", GRPO, grpo_new)),
            ),
            {"train.py": train_new, "grpo.py": grpo_new},
        )
    )
    train_new2, grpo_new2 = edit(TRAIN, *LR, *QK_NORM), edit(GRPO, *ADV_NO_STD, *ENTROPY)
    add(
        Case(
            "multi_file_one_fence_bare_counts",
            "several_files",
            both,
            reply(
                "Patch:",
                fence(
                    headers(
                        bare(udiff("grpo.py", GRPO, grpo_new2) + udiff("train.py", TRAIN, train_new2)),
                        lambda a, b, c, e: (a, b, c, e + 1),
                    )
                ),
            ),
            {"train.py": train_new2, "grpo.py": grpo_new2},
        )
    )
    # a new file plus its use
    helper = (
        '"""Muon-style orthogonalised momentum, kept tiny for the experiment."""\n\nimport torch\n\n\n'
        "def newton_schulz(g, steps=5):\n    x = g / (g.norm() + 1e-7)\n    for _ in range(steps):\n"
        "        x = 1.5 * x - 0.5 * x @ x.T @ x\n    return x\n"
    )
    train_new3 = edit(
        TRAIN,
        ("import torch.nn.functional as F\n", "import torch.nn.functional as F\n\nfrom ortho import newton_schulz\n"),
    )
    add(
        Case(
            "new_file_dev_null",
            "new_file",
            {"train.py": "train.py"},
            reply(
                "Add a helper module and import it:",
                fence(
                    udiff("train.py", TRAIN, train_new3)
                    + udiff("ortho.py", "", helper).replace("--- a/ortho.py", "--- /dev/null")
                ),
            ),
            {"train.py": train_new3, "ortho.py": helper},
        )
    )
    add(
        Case(
            "new_file_bare_header_bad_counts",
            "new_file",
            {"train.py": "train.py"},
            reply(
                "New file:",
                fence(
                    headers(
                        udiff("ortho.py", "", helper)
                        .replace("--- a/ortho.py", "--- /dev/null")
                        .replace("+++ b/ortho.py", "+++ ortho.py"),
                        lambda a, b, c, e: (0, 0, 1, 8),
                    )
                ),
            ),
            {"train.py": TRAIN, "ortho.py": helper},
        )
    )
    # CRLF files edited by an LF diff
    evaluate_lf = EVALUATE
    evaluate_new = edit(
        evaluate_lf, ("    return answer.lower()\n", '    answer = answer.rstrip(".")\n    return answer.lower()\n')
    )
    add(
        Case(
            "crlf_file_lf_diff",
            "crlf",
            {"evaluate.py": "evaluate_crlf.py"},
            reply("Strip trailing periods:", fence(udiff("evaluate.py", evaluate_lf, evaluate_new))),
            {"evaluate.py": crlf(evaluate_new)},
        )
    )
    evaluate_new2 = edit(
        evaluate_lf,
        (
            "        return 0.0\n    return 1.0 if",
            "        return 0.0\n    # exact match after normalisation\n    return 1.0 if",
        ),
    )
    add(
        Case(
            "crlf_file_unspaced_blanks",
            "crlf",
            {"evaluate.py": "evaluate_crlf.py"},
            reply("Patch:", fence(unspace_blanks(udiff("evaluate.py", evaluate_lf, evaluate_new2)))),
            {"evaluate.py": crlf(evaluate_new2)},
        )
    )
    # a file without a final newline
    config_new = edit(CONFIG, ("eval_batches = 8", "eval_batches = 16"))
    plain = udiff("config.py", CONFIG, config_new).replace("\\ No newline at end of file\n", "")
    add(
        Case(
            "no_final_newline_markers_missing",
            "final_newline",
            {"config.py": "config_nonl.py"},
            reply("Patch:", fence(plain)),
            {"config.py": config_new},
        )
    )
    add(
        Case(
            "no_final_newline_markers_present",
            "final_newline",
            {"config.py": "config_nonl.py"},
            reply("Patch:", fence(udiff("config.py", CONFIG, config_new))),
            {"config.py": config_new},
        )
    )
    config_new2 = edit(CONFIG, ("num_workers = 4\n", "num_workers = 8\n"))
    add(
        Case(
            "no_final_newline_untouched_end",
            "final_newline",
            {"config.py": "config_nonl.py"},
            reply("Patch:", fence(bare(udiff("config.py", CONFIG, config_new2)))),
            {"config.py": config_new2},
        )
    )
    # SEARCH/REPLACE blocks
    add(
        Case(
            "search_replace_exact",
            "search_replace",
            {"train.py": "train.py"},
            reply(
                "train.py",
                "```python\n<<<<<<< SEARCH\n        x = F.gelu(x)\n=======\n"
                "        x = F.relu(x).square()  # ReLU^2 activation\n>>>>>>> REPLACE\n```",
            ),
            {"train.py": edit(TRAIN, *RELU2)},
        )
    )
    add(
        Case(
            "search_replace_tabs",
            "search_replace",
            {"grpo.py": "grpo.py"},
            reply(
                "**grpo.py**",
                "<<<<<<< SEARCH\n\tstd = grouped.std(dim=1, keepdim=True)\n"
                "\tadvantages = (grouped - mean) / (std + eps)\n=======\n"
                "\t# Dr. GRPO: do not divide by the group std (it over-weights near-uniform groups)\n"
                "\tadvantages = grouped - mean\n>>>>>>> REPLACE",
            ),
            {"grpo.py": edit(GRPO, *ADV_NO_STD)},
        )
    )
    add(
        Case(
            "search_replace_two_files",
            "search_replace",
            both,
            reply(
                "Two edits.",
                "File: train.py\n```\n<<<<<<< SEARCH\nlearning_rate = 6e-4\n=======\n"
                "learning_rate = 1e-3\n>>>>>>> REPLACE\n```\n",
                "File: grpo.py\n```\n<<<<<<< SEARCH\ncliprange = 0.2\n=======\ncliprange = 0.28\n>>>>>>> REPLACE\n```",
            ),
            {"train.py": edit(TRAIN, LR[0]), "grpo.py": edit(GRPO, *CLIP)},
        )
    )
    add(
        Case(
            "search_replace_new_file",
            "search_replace",
            {"train.py": "train.py"},
            reply("ortho.py", "```python\n<<<<<<< SEARCH\n=======\n" + helper + ">>>>>>> REPLACE\n```"),
            {"train.py": TRAIN, "ortho.py": helper},
        )
    )
    return cases


def refuse_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    t = {"train.py": "train.py"}
    g = {"grpo.py": "grpo.py"}
    init_new = edit(
        TRAIN,
        (
            "        elif isinstance(module, nn.Embedding):\n"
            "            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)\n",
            "        elif isinstance(module, nn.Embedding):\n"
            "            torch.nn.init.normal_(module.weight, mean=0.0, std=0.01)\n",
        ),
    )
    add(
        refuse(
            "ambiguous_context_wrong_line",
            "ambiguous",
            t,
            reply(
                "Patch:",
                fence(headers(udiff("train.py", TRAIN, init_new, n=0), lambda a, b, c, e: (a - 40, b, c - 40, e))),
            ),
            "the removed line occurs at lines 120 and 122; the header points at line 82, nearer the wrong one",
        )
    )
    per_token = edit(
        GRPO,
        (
            '    elif loss_type == "reinforce_with_baseline":\n'
            "        per_token = -advantages.unsqueeze(-1) * log_probs\n",
            '    elif loss_type == "reinforce_with_baseline":\n'
            "        per_token = -(advantages - advantages.mean()).unsqueeze(-1) * log_probs\n",
        ),
    )
    add(
        refuse(
            "ambiguous_no_numbers",
            "ambiguous",
            g,
            reply("Patch:", fence(re.sub(r"(?m)^@@ .* @@$", "@@ @@", udiff("grpo.py", GRPO, per_token, n=0)))),
            "the removed line occurs twice and the header has no line numbers",
        )
    )
    model_train = edit(
        GRPO, ("    model.train()\n    return correct", "    model.train()\n    model.zero_grad()\n    return correct")
    )
    add(
        refuse(
            "ambiguous_one_line_context",
            "ambiguous",
            g,
            reply(
                "Patch:",
                fence(
                    headers(
                        _only_leading_context(udiff("grpo.py", GRPO, model_train, n=1)),
                        lambda a, b, c, e: (a - 30, 1, c - 30, 2),
                    )
                ),
            ),
            "`model.train()` alone occurs twice; the header is 30 lines off",
        )
    )
    add(
        refuse(
            "search_replace_ambiguous",
            "ambiguous",
            g,
            reply(
                "grpo.py",
                "<<<<<<< SEARCH\n    model.train()\n=======\n    model.train()\n    torch.cuda.empty_cache()\n"
                ">>>>>>> REPLACE",
            ),
            "`model.train()` occurs twice",
        )
    )
    relu = udiff("train.py", TRAIN, edit(TRAIN, *RELU2))
    add(
        refuse(
            "hallucinated_context",
            "missing_context",
            t,
            reply(
                "Patch:",
                fence(
                    must_replace(
                        relu,
                        "     def forward(self, x):\n         x = self.c_fc(x)\n",
                        "     def forward(self, x):\n         x = self.dropout(self.c_fc(x))\n",
                    )
                ),
            ),
            "the model's context has a dropout call that is not in the file",
        )
    )
    lr_diff = udiff("train.py", TRAIN, edit(TRAIN, *LR))
    add(
        refuse(
            "context_value_differs",
            "missing_context",
            t,
            reply("Patch:", fence(must_replace(lr_diff, " dropout = 0.0\n", " dropout = 0.1\n"))),
            "context says dropout 0.1, the file has 0.0",
        )
    )
    add(
        refuse(
            "removed_line_differs",
            "missing_context",
            t,
            reply(
                "Patch:",
                fence(must_replace(relu, "-        x = F.gelu(x)\n", '-        x = F.gelu(x, approximate="tanh")\n')),
            ),
            "the removed line is not the file's line",
        )
    )
    wsd = udiff("train.py", TRAIN, edit(TRAIN, *WSD))
    add(
        refuse(
            "elided_context",
            "missing_context",
            t,
            reply(
                "Patch:",
                fence(
                    must_replace(
                        wsd,
                        "     if it < warmup_iters:\n         return learning_rate * (it + 1) / warmup_iters\n",
                        "     ...\n",
                    )
                ),
            ),
            "the model elided lines with `...`",
        )
    )
    add(
        refuse(
            "missing_file",
            "missing_file",
            t,
            reply("Patch:", fence(relu.replace("train.py", "model.py"))),
            "the diff targets model.py, which the environment does not have",
        )
    )
    grpo_bad = must_replace(
        udiff("grpo.py", GRPO, edit(GRPO, *CLIP)), ' loss_type = "grpo_clip"\n', ' loss_type = "dapo"\n'
    )
    add(
        refuse(
            "multi_file_one_bad",
            "missing_context",
            {"train.py": "train.py", "grpo.py": "grpo.py"},
            reply("Patch:", fence(relu), fence(grpo_bad)),
            "train.py's part is fine; grpo.py's is not: all or nothing",
        )
    )
    add(
        refuse(
            "search_replace_no_match",
            "missing_context",
            t,
            reply(
                "train.py",
                "<<<<<<< SEARCH\n        x = F.silu(x)\n=======\n        x = F.relu(x).square()\n>>>>>>> REPLACE",
            ),
            "the search text is not in the file",
        )
    )
    add(
        refuse(
            "creates_existing_file",
            "new_file",
            t,
            reply(
                "Patch:", fence(udiff("train.py", "", "print('hello')\n").replace("--- a/train.py", "--- /dev/null"))
            ),
            "a /dev/null diff for a file that exists",
        )
    )
    add(
        refuse(
            "insertion_without_anchor",
            "no_line_numbers",
            t,
            reply("Patch:", fence("--- a/train.py\n+++ b/train.py\n@@ @@\n+import wandb\n")),
            "only added lines and no line numbers",
        )
    )
    add(
        refuse(
            "no_code_change",
            "no_diff",
            t,
            reply("You could try a higher learning rate:", fence("learning_rate = 1e-3\n", "python")),
            "prose and a code snippet, no diff",
        )
    )
    add(
        refuse(
            "prose_inside_hunk",
            "missing_context",
            t,
            reply(
                "Patch:",
                fence(
                    must_replace(
                        udiff("train.py", TRAIN, edit(TRAIN, *WSD)),
                        "     if it < warmup_iters:\n",
                        "(warmup branch unchanged)\n     if it < warmup_iters:\n",
                    )
                ),
            ),
            "a prose remark inside the hunk: read as context, it is not in the file",
        )
    )
    return cases


def _only_leading_context(diff: str) -> str:
    """Drop trailing context lines of each hunk (the model gave one line of context before the change)."""
    out: list[str] = []
    for line in diff.splitlines(True):
        out.append(line)
    while out and out[-1].startswith(" "):
        out.pop()
    return "".join(out)


def write_case(case: Case) -> None:
    target = CASES / case.name
    target.mkdir(parents=True)
    lines = [f'kind = "{case.kind}"', f'expect = "{"refuse" if case.expected is None else "apply"}"']
    if case.note:
        lines.append(f"note = {json.dumps(case.note)}")
    lines.append("\n[files]")
    lines += [f'"{path}" = "{name}"' for path, name in sorted(case.files.items())]
    (target / "case.toml").write_text("\n".join(lines) + "\n")
    (target / "response.md").write_bytes(case.response.encode("utf-8"))
    if case.expected is not None:
        for path, text in case.expected.items():
            if text is not None:
                out = target / "expected" / path
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(text.encode("utf-8"))


def main() -> None:
    BASES.mkdir(exist_ok=True)
    (BASES / "evaluate_crlf.py").write_bytes(crlf(EVALUATE).encode("utf-8"))
    (BASES / "config_nonl.py").write_bytes(CONFIG.encode("utf-8"))
    if CASES.exists():
        shutil.rmtree(CASES)
    cases = apply_cases() + more_cases() + refuse_cases()
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    for case in cases:
        write_case(case)
    refused = sum(case.expected is None for case in cases)
    print(f"wrote {len(cases)} cases ({len(cases) - refused} to apply, {refused} to refuse) to {CASES}")


if __name__ == "__main__":
    main()
