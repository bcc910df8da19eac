"""The GRPO grader decides like the paper's grader.

Every expected decision below was derived by hand from the original grader's rules (format check, last
`<answer>`, last box, then classic MATH normalisation OR the symbolic check with its integer and fraction
rules), not read off this implementation; the comment says which rule decides.
"""

from __future__ import annotations

import json

import pytest

from idealab.paths import data_dir
from test_grpo_util import ENV_DIR, SHARED_DATA, load_env_modules


@pytest.fixture(scope="module")
def grader():  # type: ignore[no-untyped-def]
    return load_env_modules(ENV_DIR).grader


def formatted(answer: str) -> str:
    return f" 2 + 3 is five. </think> <answer>{answer}</answer>"


# (model answer, gold, correct?, the rule that decides)
TABLE = [
    # gold forms and boxes
    ("5", "5", True, "identical"),
    ("\\frac{1}{2}", "\\frac{1}{2}", True, "identical"),
    ("\\boxed{7}", "7", True, "box content"),
    ("The answer is \\boxed{12}", "12", True, "box content"),
    ("\\boxed{3} or \\boxed{4}", "4", True, "last box"),
    ("\\boxed{3} or \\boxed{4}", "3", False, "last box"),
    ("\\boxed{5", "5", False, "unreadable box: format 1, reward 0"),
    ("5", "\\boxed{5}", True, "gold reduced to its box"),
    ("\\pi", "\\pi", True, "identical"),
    ("\\infty", "\\infty", True, "identical"),
    # fractions
    ("\\dfrac{3}{4}", "\\frac{3}{4}", True, "classic: dfrac -> frac"),
    ("\\tfrac{3}{4}", "\\frac{3}{4}", True, "classic: tfrac -> frac"),
    ("3/4", "\\frac{3}{4}", True, "classic: a/b -> frac"),
    ("\\frac34", "\\frac{3}{4}", True, "classic: braces added"),
    ("\\frac{6}{8}", "\\frac{3}{4}", False, "symbolic: two fractions must be identical"),
    ("6/8", "3/4", False, "symbolic: two fractions must be identical"),
    ("-\\frac{1}{2}", "-\\frac{1}{2}", True, "identical"),
    ("\\frac{-1}{2}", "-\\frac{1}{2}", True, "symbolic: both read -1/2"),
    ("1/3", "\\frac{1}{3}", True, "classic: a/b -> frac"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True, "classic: sqrt braces"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True, "symbolic: both read sqrt(2)/2"),
    ("2\\sqrt{2}", "\\sqrt{8}", True, "symbolic: sympy difference 0"),
    ("\\sqrt{2}", "\\sqrt{3}", False, "symbolic: difference not 0"),
    ("\\pi/2", "\\frac{\\pi}{2}", True, "symbolic: both read pi/2"),
    ("2\\pi", "\\pi", False, "symbolic: difference not 0"),
    ("7\\frac{3}{4}", "\\frac{31}{4}", True, "symbolic: mixed number 7+3/4"),
    ("7 3/4", "\\frac{31}{4}", True, "symbolic: mixed number 7+3/4"),
    # decimals
    ("0.5", "\\frac{1}{2}", True, "classic: 0.5 -> frac{1}{2}"),
    ("0.75", "\\frac{3}{4}", True, "symbolic: sympy difference 0"),
    ("1.5", "\\frac{3}{2}", True, "symbolic: sympy difference 0"),
    ("\\frac{3}{2}", "1.5", True, "symbolic: sympy difference 0"),
    ("0.333", "\\frac{1}{3}", False, "symbolic: difference not 0"),
    ("\\frac{1}{3}", "0.3", False, "symbolic: difference not 0"),
    ("2.5", "2.50", True, "symbolic: sympy difference 0"),
    (".5", "0.5", True, "classic: leading 0 added"),
    ("5.0", "5", True, "symbolic: whole float -> integer"),
    ("5.00", "5", True, "symbolic: whole float -> integer"),
    ("3", "3.0", True, "symbolic: whole float -> integer"),
    # integers need integers
    ("-6/3", "-2", False, "symbolic: integer gold, non-integer answer"),
    ("4/2", "2", False, "symbolic: integer gold, non-integer answer"),
    ("10,000", "10000", True, "symbolic: thousands comma removed"),
    ("1,000,000", "1000000", True, "symbolic: thousands commas removed"),
    ("10{,}000", "10000", True, "symbolic: braces and thousands comma removed"),
    ("- 5", "-5", True, "classic: spaces removed"),
    # trailing punctuation
    ("5.", "5", True, "symbolic: '5.' is a whole float"),
    ("\\frac{1}{2}.", "\\frac{1}{2}", False, "symbolic: fractions '1/2.' and '1/2' differ"),
    ("0.25.", "0.25", False, "symbolic: '0.25.' does not parse"),
    ("12,", "12", False, "symbolic: integer gold, '12,' is no integer"),
    ("x = 3.", "3", False, "symbolic: integer gold, 'x=3.' is no integer"),
    # units and signs
    ("10\\text{ cm}", "10", True, "classic: trailing \\text unit"),
    ("10 cm", "10", True, "classic: unit word"),
    ("5 mph", "5", True, "classic: unit word"),
    ("12 feet", "12", True, "classic: unit word"),
    ("3 days", "3", True, "classic: unit word (plural)"),
    ("5 \\text{ inches}", "5", True, "classic: trailing \\text unit"),
    ("90^\\circ", "90", True, "classic: degree mark"),
    ("90^{\\circ}", "90", True, "classic: degree mark"),
    ("\\$5", "5", True, "classic: dollar sign"),
    ("50\\%", "50", True, "classic: percent sign"),
    ("50%", "50", True, "symbolic: percent sign"),
    # prefixes
    ("x = 3", "3", True, "classic: short prefix before '='"),
    ("k=5", "5", True, "classic: short prefix before '='"),
    ("y = 2x + 1", "2x+1", True, "classic: short prefix before '='"),
    ("abc = 5", "5", False, "prefix too long; integer gold"),
    # lists and intervals
    ("(1,2)", "(1, 2)", True, "classic: spaces removed"),
    ("(2,1)", "(1,2)", False, "symbolic: element-wise"),
    ("[1,2)", "[1, 2)", True, "classic: spaces removed"),
    ("(1,2]", "(1,2)", False, "symbolic: closing brackets differ"),
    ("[1,2]", "(1,2)", False, "symbolic: opening brackets differ"),
    ("(-\\infty, 3)", "(-\\infty,3)", True, "classic: spaces removed"),
    ("(-\\infty, 3]", "(-\\infty, 3)", False, "symbolic: closing brackets differ"),
    ("1, 2", "1,2", True, "classic: spaces removed"),
    ("2, 1", "1,2", False, "symbolic: order matters"),
    ("(1, 2, 3)", "(1,2,3)", True, "classic: spaces removed"),
    ("(1, 2)", "(1, 2, 3)", False, "symbolic: element counts differ"),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True, "classic: \\left \\right removed"),
    ("(0.5, 1)", "(\\frac{1}{2}, 1)", True, "symbolic: element-wise sympy"),
    # expressions and text
    ("(x+1)^2", "x^2+2x+1", True, "symbolic: sympy difference 0"),
    ("x^2+1", "x^2-1", False, "symbolic: difference not 0"),
    ("\\text{Monday}", "Monday", True, "classic: enclosing \\text removed"),
    ("\\text{Tuesday}", "\\text{Monday}", False, "different words"),
    ("monday", "Monday", True, "symbolic: lower-cased"),
    ("\\text{(C)}", "\\text{(C)}", True, "identical"),
    # plainly wrong
    ("4", "5", False, "wrong"),
    ("-3", "3", False, "wrong"),
    ("", "5", False, "empty answer"),
    ("6", "\\frac{1}{2}", False, "wrong"),
]


def test_the_table_has_at_least_60_forms() -> None:
    assert len(TABLE) >= 60


@pytest.mark.parametrize(("pred", "gold", "correct", "rule"), TABLE, ids=[f"{p!r}~{g!r}" for p, g, _, _ in TABLE])
def test_decisions_match_the_original_rules(grader, pred: str, gold: str, correct: bool, rule: str) -> None:  # type: ignore[no-untyped-def]
    g = grader.grade(formatted(pred), gold)
    assert (g.format_reward, g.answer_reward, g.reward) == (1.0, float(correct), float(correct)), rule


@pytest.mark.parametrize(
    "response",
    [
        "The answer is 5.", "\\boxed{5}", " ok </think><answer>5</answer>", " ok </think> <answer>5",
        " ok <answer>5</answer>",
    ],
)
def test_format_is_required(grader, response: str) -> None:  # type: ignore[no-untyped-def]
    assert grader.grade(response, "5") == grader.WRONG_FORMAT


def test_the_answer_is_after_the_last_answer_tag(grader) -> None:  # type: ignore[no-untyped-def]
    response = " <answer>1</answer> </think> <answer>2</answer>"
    assert grader.grade(response, "2").reward == 1.0 and grader.grade(response, "1").reward == 0.0


def _math500() -> list[dict[str, str]]:
    for path in (SHARED_DATA / "math" / "test.jsonl", data_dir() / "grpo" / "math" / "test.jsonl"):
        if path.is_file():
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return []


@pytest.mark.slow
@pytest.mark.skipif(not _math500(), reason="MATH-500 is not prepared (idealab data fetch)")
@pytest.mark.parametrize("wrap", ["{}", "\\boxed{{{}}}"])
def test_every_math500_gold_answer_grades_itself_correct(grader, wrap: str) -> None:  # type: ignore[no-untyped-def]
    rows = _math500()
    assert len(rows) == 500
    wrong = [r["answer"] for r in rows if grader.grade(formatted(wrap.format(r["answer"])), r["answer"]).reward != 1]
    assert wrong == []
