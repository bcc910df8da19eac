"""Held-out evaluation: exact-match accuracy of boxed answers."""

import re


def extract_boxed(text):
    match = re.search(r"\\boxed\{([^{}]*)\}", text)
    return match.group(1).strip() if match else None


def normalise(answer):
    answer = answer.replace(" ", "").replace("\\!", "")
    if answer.endswith(".0"):
        answer = answer[:-2]
    answer = answer.rstrip(".")
    return answer.lower()


def score(response, truth):
    predicted = extract_boxed(response)
    if predicted is None:
        return 0.0
    return 1.0 if normalise(predicted) == normalise(truth) else 0.0
