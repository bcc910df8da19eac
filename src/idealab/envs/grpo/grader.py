"""The GRPO environment's grader: the original's R1-Zero reward, re-implemented. HIDDEN and PROTECTED.

One function grades training rewards and evaluation alike, as in the paper's released environment:

  1. format: the response must contain `</think> <answer>` and `</answer>` (else format 0, reward 0);
  2. the answer is everything after the last `<answer>`, with `</answer>` removed; if it holds `\\boxed`,
     the content of the last box is the answer (a box that cannot be read: format 1, reward 0); a gold
     answer holding `\\boxed` is reduced to its box content the same way;
  3. correct if EITHER the two strings are equal after the classic MATH normalisation (`classic_normalize`)
     OR the symbolic check agrees (`symbolic_match`: a more aggressive normalisation, then string
     equality or, element by element for tuples and intervals, sympy simplifying the difference to 0);
  4. correct: reward 1; formatted but wrong: reward 0.

The rules, their order and their quirks are the original's (written here from its specification), because
the metric is only comparable to the paper's when the same outputs get the same grades. Consequences worth
knowing: an integer gold answer needs an integer answer ("-6/3" is wrong for "-2"); unreduced fractions must
match exactly; a trailing period is accepted after an integer but not after a fraction or a decimal.

GRPO_GRADER (set by presets only) picks `original` (default) or `math_verify`: the original, and when it
says wrong, math-verify may still accept (the original's slower "non-fast" mode; more lenient).
"""

import os
import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass

GRADER = os.environ.get("GRPO_GRADER", "original")
SYMPY_TIMEOUT_S = 5  # a guard against a pathological expression; the original had none


@dataclass(frozen=True)
class Grade:
    format_reward: float
    answer_reward: float
    reward: float


WRONG_FORMAT = Grade(0.0, 0.0, 0.0)
WRONG_ANSWER = Grade(1.0, 0.0, 0.0)
CORRECT = Grade(1.0, 1.0, 1.0)


class _Malformed(Exception):
    """The classic normalisation gave up on this string (it is then compared as written)."""


# ------------------------------------------------------------------------------------ extraction


def last_boxed(text):
    """Content of the last `\\boxed{...}` in text (braces balanced), or None.

    As in the original: the last `\\boxed` (or, with none, the last `\\fbox`) is found, the braces after
    it are matched, and the span must read `\\boxed{...}`; `\\fbox{..}` and `\\boxed 5` give None.
    """
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for end in range(start, len(text)):
        if text[end] == "{":
            depth += 1
        elif text[end] == "}":
            depth -= 1
            if depth == 0:
                span = text[start : end + 1]
                return span[len("\\boxed{") : -1] if span.startswith("\\boxed{") else None
    return None


def extract_answer(response):
    """(formatted, answer) of an R1-Zero response; answer is None when the format is wrong or the box
    cannot be read."""
    if "</think> <answer>" not in response or "</answer>" not in response:
        return False, None
    answer = response.split("<answer>")[-1].replace("</answer>", "")
    if "\\boxed" in answer:
        answer = last_boxed(answer)
    return True, answer


# ------------------------------------------------------------------- classic MATH normalisation
# Unit words removed by the classic normalisation, in the original's order (removal is order-dependent),
# each used as a regular expression between non-word characters; then the same words with an "s".
_UNIT_WORDS = (
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey",
    "prime", "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain",
    "ab", "way", "west", "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h",
    "no change", "men", "soldier", "pie", "bc", "excess", "st", "inches", "noon", "percent", "by", "gal",
    "kmh", "c", "acre", "rise", "a . m", "th", "π r 2", "sq", "mark", "l", "toy", "coin", "sq . m",
    "gallon", "° f", "profit", "minw", "yr", "women", "feet", "am", "pm", "hr", "cu cm", "square",
    "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph", "day", "hour",
    "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³", "hectare",
    "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm",
    "apple", "liter", "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface",
    "litre", "pi sq m", "s .", "metre", "meter", "inch",
)
_UNIT_PATTERNS = [
    re.compile(r"(^|\W)" + word + r"($|\W)") for word in _UNIT_WORDS + tuple(w + "s" for w in _UNIT_WORDS)
]
_ENCLOSING_TEXT = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_TRAILING_TEXT = re.compile(r"\\text{.*?}$")


def classic_normalize(answer):
    """The classic MATH normalisation (Hendrycks et al., as extended by the original's grader)."""
    if answer is None:
        return None
    answer = answer.strip()
    m = _ENCLOSING_TEXT.search(answer)
    if m is not None:
        answer = m.group("text").strip()
    try:
        return _strip(answer)
    except _Malformed:
        return answer


def _strip(s):
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s).replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "")
    without_unit = _TRAILING_TEXT.sub("", s).strip()  # "5\text{ cm}" -> "5" (never down to nothing)
    if without_unit and without_unit != s:
        s = without_unit
    for _ in range(2):
        for pattern in _UNIT_PATTERNS:
            shorter = pattern.sub(r"\1\2", s)
            if shorter:
                s = shorter
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:  # a unit written as "\text{ ...}"
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise _Malformed(s)
        s = parts[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "k = 5" -> "5"
        s = sides[1]
    s = _brace_sqrt(s).replace(" ", "")
    s = _brace_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def _brace_sqrt(s):
    """\\sqrt3 -> \\sqrt{3}."""
    pieces = s.split("\\sqrt")
    out = pieces[0]
    for piece in pieces[1:]:
        if not piece:
            raise _Malformed(s)
        out += "\\sqrt" + (piece if piece[0] == "{" else "{" + piece[0] + "}" + piece[1:])
    return out


def _brace_fracs(s):
    """\\frac12 -> \\frac{1}{2}, \\frac1{x} -> \\frac{1}{x} (a \\frac with fewer than 2 characters after
    it leaves the string as it was)."""
    pieces = s.split("\\frac")
    out = pieces[0]
    for piece in pieces[1:]:
        out += "\\frac"
        if not piece:
            raise _Malformed(s)
        if piece[0] == "{":
            out += piece
        elif len(piece) < 2:
            return s
        elif piece[1] == "{":
            out += "{" + piece[0] + "}" + piece[1:]
        else:
            out += "{" + piece[0] + "}{" + piece[1] + "}" + piece[2:]
    return out


def _slash_to_frac(s):
    """"3/4" (two integers written plainly) -> \\frac{3}{4}."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


# ------------------------------------------------------------------------------- symbolic check
_SYMPY_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
                "month", "year", "foot", "feet", "inch", "yard")
_SYMPY_UNIT_PATTERNS = [re.compile(unit + r"(es)?(s)? *(\^[0-9]+)?") for unit in _SYMPY_UNITS]
_FORMATTED_COMMA = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_MIXED_NUMBER = re.compile(r"([0-9]) +([0-9])")  # "7 3/4" -> "7+3/4"
_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_BAD_SUBSTRINGS = ("^{", "^(")
_BAD_PATTERNS = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_TUPLE_CHARS = "()[]"


def _is_float(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def _is_int_value(x):
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (ValueError, OverflowError):  # nan, inf
        return False


def _strip_formatted_commas(s):
    """Remove thousands separators ("1,234,567"), never the commas of a tuple ("1,2")."""
    while True:
        shorter = _FORMATTED_COMMA.sub(r"\1\3\4", s)
        if shorter == s:
            return s
        s = shorter


def _str_is_int(s):
    try:
        return _is_int_value(float(_strip_formatted_commas(s)))
    except ValueError:
        return False


def symbolic_normalize(expr):
    """The symbolic check's normalisation: text, units, powers of ten, LaTeX to plain text, lower case."""
    if expr is None:
        return None
    m = _ENCLOSING_TEXT.search(expr)
    if m is not None:
        expr = m.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for pattern in _SYMPY_UNIT_PATTERNS:
        expr = pattern.sub("", expr)
    expr = re.sub(r"\^ *\\circ", "", expr)
    if expr and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = re.sub(r",\\! *", "", expr)
    if _is_float(expr) and _is_int_value(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        expr = latex_to_text(expr)
    expr = re.sub("- *", "-", expr)
    expr = _MIXED_NUMBER.sub(r"\1+\2", expr)
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def _split_tuple(expr):
    """Elements of "(a,b)" or "[a,b)" (brackets only at the ends), else [expr]."""
    expr = _strip_formatted_commas(expr)
    if not expr:
        return []
    inner = expr[1:-1]
    if (len(expr) > 2 and expr[0] in _TUPLE_CHARS and expr[-1] in _TUPLE_CHARS
            and not any(ch in inner for ch in _TUPLE_CHARS)):
        return [e.strip() for e in inner.split(",")]
    return [expr]


def _evaluable(expr):
    """Only plain expressions go to sympy: at most 2 unknown letters, no towers or long exponents."""
    letters = {ch for ch in expr.replace("sqrt", "").replace("frac", "") if ch.isalpha()}
    if len(letters) > 2 or any(bad in expr for bad in _BAD_SUBSTRINGS):
        return False
    return not any(p.search(expr) for p in _BAD_PATTERNS)


@contextmanager
def _time_limit(seconds):
    """SIGALRM-based limit in the main thread (where grading runs); no limit elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _sympy_equal(gold, pred):
    expr = f"({gold})-({pred})"
    if not _evaluable(expr):
        return False
    import sympy
    from sympy.parsing import sympy_parser

    transformations = sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,)
    try:
        with _time_limit(SYMPY_TIMEOUT_S):
            diff = sympy_parser.parse_expr(expr.replace("^", "**"), transformations=transformations)
            return sympy.simplify(diff) == 0
    except Exception:  # unparsable text, sympy errors, the time limit: not equal, as in the original
        return False


def symbolic_match(pred, gold):
    g, p = symbolic_normalize(gold), symbolic_normalize(pred)
    if g is None:
        return False
    if g == p:
        return True
    if not p:
        return False
    g_elems, p_elems = _split_tuple(g), _split_tuple(p)
    if len(g_elems) > 1 and (g[0] != p[0] or g[-1] != p[-1]):  # "(1,2)" vs "[1,2]"
        return False
    if len(g_elems) != len(p_elems):
        return False
    for ge, pe in zip(g_elems, p_elems):
        if _FRACTION.search(ge) and _FRACTION.search(pe):
            ok = ge == pe  # fractions must be written the same (an unreduced one stays wrong)
        elif _str_is_int(ge) != _str_is_int(pe):
            ok = False  # an integer needs an integer
        else:
            ok = _sympy_equal(ge, pe)
        if not ok:
            return False
    return True


# ------------------------------------------------------------------------- LaTeX to plain text
# What the symbolic check reads: \frac{a}{b} -> a/b (no brackets added, as the original's converter),
# \sqrt{x} -> sqrt(x), text macros -> their text, symbols -> words or operators, unknown macros dropped.
_SYMBOLS = {
    "pi": "pi", "infty": "inf", "cup": "U", "cdot": "*", "times": "*", "div": "÷", "pm": "±", "mp": "∓",
    "le": "≤", "ge": "≥", "ne": "≠", "lt": "<", "gt": ">", "in": "∈", "circ": "∘", "emptyset": "∅",
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "theta": "θ", "lambda": "λ", "mu": "μ",
    "sigma": "σ", "phi": "φ", "omega": "ω", "ldots": "...", "dots": "...", "cdots": "⋯",
    "%": "%", "$": "$", "{": "{", "}": "}", "&": "&", "#": "#", "_": "_",
    ",": " ", ";": " ", ":": " ", " ": " ", "quad": " ", "qquad": " ", "!": "", "\\": " ",
}
_KEEP_ARGUMENT = {"text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mbox", "hbox",
                  "operatorname", "boldsymbol", "emph", "mathbb", "mathcal", "overline", "bar", "hat"}


def latex_to_text(latex):
    latex = latex.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    text, _ = _render(latex, 0, stop=None)
    return text.strip()


def _render(s, i, stop):
    out = []
    while i < len(s):
        ch = s[i]
        if ch == stop:
            return "".join(out), i + 1
        if ch == "{":
            inner, i = _render(s, i + 1, "}")
            out.append(inner)
        elif ch == "\\":
            piece, i = _macro(s, i)
            out.append(piece)
        else:
            out.append(ch)
            i += 1
    return "".join(out), i


def _argument(s, i):
    """The next argument: a {group}, a macro, or one character (spaces before it skipped)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return "", i
    if s[i] == "{":
        return _render(s, i + 1, "}")
    if s[i] == "\\":
        return _macro(s, i)
    return s[i], i + 1


def _macro(s, i):
    j = i + 1
    while j < len(s) and s[j].isalpha():
        j += 1
    name = s[i + 1 : j] if j > i + 1 else s[i + 1 : i + 2]
    i = j if j > i + 1 else i + 2
    if name == "frac":
        num, i = _argument(s, i)
        den, i = _argument(s, i)
        return f"{num}/{den}", i
    if name == "sqrt":
        degree = ""
        if i < len(s) and s[i] == "[":
            close = s.find("]", i)
            degree, i = (s[i + 1 : close], close + 1) if close > 0 else ("", i)
        radicand, i = _argument(s, i)
        return f"{degree}sqrt({radicand})", i
    if name in _KEEP_ARGUMENT:
        return _argument(s, i)
    if name in ("left", "right", "big", "Big", "bigg", "Bigg", "displaystyle", "begin", "end"):
        if name in ("begin", "end"):
            _, i = _argument(s, i)  # the environment's name
        return "", i
    return _SYMBOLS.get(name, ""), i


# ------------------------------------------------------------------------------------- grading


def _math_verify_match(pred, gold):
    """math-verify's judgement (the `math_verify` grader only); parse or sympy failures count as wrong."""
    from math_verify import parse, verify

    try:
        gold_parsed, pred_parsed = parse("$" + gold + "$"), parse("$" + pred + "$")
        return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed))
    except Exception:
        return False


def answers_match(pred, gold):
    """The original's decision on an extracted answer against a gold answer."""
    if pred is None:
        return False
    if "\\boxed" in gold:
        gold = last_boxed(gold)
        if gold is None:
            return False
    correct = classic_normalize(pred) == classic_normalize(gold) or symbolic_match(pred, gold)
    if not correct and GRADER == "math_verify":
        correct = _math_verify_match(pred, gold)
    return correct


def grade(response, gold):
    """Reward of one response: 1 only when strictly formatted AND the answer matches the gold."""
    formatted, answer = extract_answer(response)
    if not formatted:
        return WRONG_FORMAT
    return CORRECT if answers_match(answer, gold) else WRONG_ANSWER


if GRADER not in ("original", "math_verify"):
    raise SystemExit(f"GRPO_GRADER={GRADER!r}: choose original or math_verify")
