"""The hidden grader and evaluation of the GRPO environment, and their independence from ideas' edits."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from idealab.manifest import load_manifest
from idealab.metrics import extract_values, judge
from idealab.paths import data_dir
from test_grpo_util import ENV_DIR, load_env_modules


@pytest.fixture(scope="module")
def ev():  # type: ignore[no-untyped-def]
    return load_env_modules(ENV_DIR).evaluate


def formatted(answer: str) -> str:
    return f" 2 + 3 is five. </think> <answer>{answer}</answer>"


@pytest.mark.parametrize(
    "response",
    [
        "The answer is 5.",  # no tags
        "\\boxed{5}",  # boxed but not formatted
        " ok </think><answer>5</answer>",  # the separating space is part of the format
        " ok </think> <answer>5",  # unterminated answer
        " ok <answer>5</answer>",  # no </think>
    ],
)
def test_unformatted_responses_score_zero(ev, response: str) -> None:  # type: ignore[no-untyped-def]
    g = ev.grade(response, "5")
    assert (g.format_reward, g.reward) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [("4", "5"), ("-3", "3"), ("(2,1)", "(1,2)"), ("\\frac{1}{3}", "0.3"), ("-6 / 3", "-2"), ("", "5"),
     ("x^2+1", "x^2-1"), ("\\text{Tuesday}", "\\text{Monday}")],
)
def test_wrong_answers_score_zero_with_format_credit(ev, pred: str, gold: str) -> None:  # type: ignore[no-untyped-def]
    g = ev.grade(formatted(pred), gold)
    assert (g.format_reward, g.answer_reward, g.reward) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac{3}{4}", "3/4"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("10\\text{ cm}", "10"),
        ("\\$5", "5"),
        ("50\\%", "50"),
        ("x = 3", "3"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("10,000", "10000"),
        ("\\text{Monday}", "Monday"),
        ("90^\\circ", "90"),
        ("\\frac12", "0.5"),
        ("(x+1)^2", "x^2+2x+1"),
        ("[1,2)", "[1, 2)"),
        ("\\boxed{7}", "7"),
    ],
)
def test_equivalent_forms_score_one(ev, pred: str, gold: str) -> None:  # type: ignore[no-untyped-def]
    assert ev.grade(formatted(pred), gold).reward == 1.0


def test_last_answer_and_last_boxed_are_used(ev) -> None:  # type: ignore[no-untyped-def]
    response = " draft <answer>1</answer> </think> <answer>so \\boxed{2} then \\boxed{\\frac{1}{2}}</answer>"
    assert load_env_modules(ENV_DIR).grader.extract_answer(response) == (True, "\\frac{1}{2}")


# ------------------------------------------------------------------- evaluation vs. training reward


def _data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "prompts").mkdir(parents=True)
    (root / "prompts" / "r1_zero.prompt").write_text("User: {question}\nAssistant: <think>")
    rows = [{"problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(4)]
    (root / "math").mkdir()
    (root / "math" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _canned_sample(model, tokenizer, prompts, temperature, top_p, max_tokens, stop, batch_size):  # type: ignore[no-untyped-def]
    # right on "0 + 1" and "1 + 1", unformatted on "2 + 1", wrong on "3 + 1": accuracy 0.5
    answers = {"0": formatted("1"), "1": formatted("2"), "2": "3", "3": formatted("7")}
    assert (temperature, top_p, max_tokens, stop) == (1.0, 1.0, 1024, "</answer>")
    return [answers[p.split("What is ")[1][0]] for p in prompts]


def test_the_scorer_grades_with_the_original_grader_and_prints_the_metric(
    ev, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    data = _data_dir(tmp_path)
    monkeypatch.setattr(ev, "sample", _canned_sample)
    template = (data / "prompts" / "r1_zero.prompt").read_text()
    problems = [json.loads(line) for line in (data / "math" / "test.jsonl").read_text().splitlines()]
    result = ev.evaluate(None, None, template, problems, step=2, seed=0)
    assert result["accuracy"] == 0.5 and result["format_rate"] == 0.75
    spec = load_manifest(ENV_DIR).metric  # the printed metric line is what the orchestrator judges
    verdict = judge(extract_values(capsys.readouterr().out, spec), spec)
    assert verdict.ok and verdict.metric == 0.5


def test_the_scorer_imports_no_editable_code() -> None:
    # a changed training reward (or rollout engine, or anything in grpo.py) cannot reach the evaluation
    tree = ast.parse((ENV_DIR / "evaluate.py").read_text())
    imported = {alias.name.split(".")[0]
                for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    editable = {Path(name).stem for name in load_manifest(ENV_DIR).files.editable}
    assert editable == {"grpo", "rollout"} and not imported & editable
    assert {"data", "grader"} <= imported  # read-only files, pristine copies in the scoring directory


# ----------------------------------------------------------------------------------------- data


def test_problem_loader_normalises_levels(tmp_path: Path) -> None:
    data = load_env_modules(ENV_DIR).data
    path = tmp_path / "p.jsonl"
    rows = [{"problem": "p", "answer": "1", "level": "Level 3"}, {"problem": "q", "answer": "2", "level": 5},
            {"problem": "r", "answer": "3", "level": "Level ?"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["level"] for r in data.load_problems(path)] == [3, 5, None]
    assert len(data.load_problems(path, limit=2)) == 2
    path.write_text(json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(ValueError, match="answer"):
        data.load_problems(path)


def test_datasets_loader_on_local_data(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    data = load_env_modules(ENV_DIR).data
    path = tmp_path / "hub.jsonl"
    rows = [{"problem": "1+1?", "solution": "It is $\\boxed{2}$.", "type": "Algebra", "level": "Level 1"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sys.path.insert(0, str(ENV_DIR))  # math_from_hub imports the grader's boxed extraction
    try:
        got = data.math_from_hub("train", source=path)
    finally:
        sys.path.remove(str(ENV_DIR))
    assert got[0]["answer"] == "2" and got[0]["level"] == 1 and got[0]["subject"] == "Algebra"


# -------------------------------------------------------------------------------- end to end


CPU_SMOKE_INPUTS = ("models/smollm2-135m-instruct/model.safetensors", "arith/test.jsonl", "prompts/r1_zero.prompt")


def _prepared_data_dir() -> Path | None:
    base = data_dir() / "grpo"
    return base if all((base / rel).is_file() for rel in CPU_SMOKE_INPUTS) else None


@pytest.mark.slow
@pytest.mark.skipif(
    _prepared_data_dir() is None,
    reason=f"the cpu-smoke set-up is not complete (needs {', '.join(CPU_SMOKE_INPUTS)} under <data>/grpo): "
    "`idealab data fetch` says what is missing",
)
def test_cpu_smoke_preset_trains_saves_the_policy_and_the_scorer_reports(tmp_path: Path) -> None:
    manifest = load_manifest(ENV_DIR, "cpu-smoke")
    assert manifest.score is not None
    work = tmp_path / "job"
    shutil.copytree(ENV_DIR, work, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "artefact"
    env = {**os.environ, **manifest.run.env, "GRPO_DATA_DIR": str(_prepared_data_dir())}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    train = subprocess.run(["/bin/sh", "-c", manifest.run.command], cwd=work, capture_output=True, text=True,
                           env={**env, "IDEALAB_OUTPUT_DIR": str(out)}, timeout=manifest.run.timeout_s)
    assert train.returncode == 0, train.stderr[-2000:]
    values = extract_values(train.stdout, manifest.metric)
    assert any(v.name == "train_reward" for v in values) and not any(v.name == "eval_accuracy" for v in values)
    assert "rollout engine: transformers" in train.stdout
    assert sorted(p.name for p in out.iterdir()) == ["policy-step0000"]  # the base model, before the only step
    scored = subprocess.run(["/bin/sh", "-c", manifest.score.command], cwd=work, capture_output=True, text=True,
                            env={**env, "IDEALAB_ARTEFACT_DIR": str(out)}, timeout=manifest.score.timeout_s)
    assert scored.returncode == 0, scored.stderr[-2000:]
    values = extract_values(scored.stdout, manifest.metric)
    assert judge(values, manifest.metric).ok
    assert sorted(v.step for v in values if v.name == "eval_accuracy") == [0]
