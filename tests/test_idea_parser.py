"""Reading ideas out of an ideator's answer: the tagged format anywhere, JSON as a fallback."""

from __future__ import annotations

from idealab.ideators.idea_parser import ParsedIdea, drop_repeats, parse_ideas

TAGGED = """Here are my ideas, after some thought.

[Experiment] Lower the learning rate to 1e-3 to stabilise training.
[Code Changes] In train.py set LR = 1e-3.
[End]

[Experiment] Add gradient clipping at 0.5.
[Code Changes] Clip gradients in the training loop with max norm 0.5.
[End]

I hope these help!
"""


def test_tagged_ideas_are_found_inside_prose():
    ideas = parse_ideas(TAGGED)
    assert ideas == [
        ParsedIdea("Lower the learning rate to 1e-3 to stabilise training.", "In train.py set LR = 1e-3."),
        ParsedIdea("Add gradient clipping at 0.5.", "Clip gradients in the training loop with max norm 0.5."),
    ]


def test_markdown_decorated_tags_and_missing_end_tags_are_accepted():
    text = (
        "1. **[Experiment]:** Use a cosine schedule.\n   **[Code Changes]:** Replace the linear decay.\n\n"
        "2. **[Experiment]** Warm up for 100 steps.\n   **[Code Changes]** WARMUP = 100"
    )
    ideas = parse_ideas(text)
    assert [i.experiment for i in ideas] == ["Use a cosine schedule.", "Warm up for 100 steps."]
    assert ideas[0].code_changes == "Replace the linear decay."
    assert ideas[1].code_changes == "WARMUP = 100"


def test_an_idea_without_code_changes_keeps_its_experiment():
    ideas = parse_ideas("[Experiment] Try a wider MLP (6x). [End]")
    assert ideas == [ParsedIdea("Try a wider MLP (6x).", "")]
    assert ideas[0].text == "[Experiment] Try a wider MLP (6x)."


def test_a_json_list_is_accepted_when_no_tags_are_present():
    text = 'Sure:\n```json\n[{"experiment": "Use RMSNorm", "code_changes": "swap LayerNorm"}, {"idea": "x2"}]\n```'
    assert parse_ideas(text) == [ParsedIdea("Use RMSNorm", "swap LayerNorm"), ParsedIdea("x2", "")]


def test_prose_without_ideas_yields_nothing():
    assert parse_ideas("I am sorry, I cannot help with [that] request. {not json]") == []
    assert parse_ideas("") == []


def test_text_round_trips_through_the_parser():
    idea = ParsedIdea("Use a larger batch.", "BATCH = 64")
    assert parse_ideas(idea.text) == [idea]


def test_repeats_of_the_avoid_list_and_within_a_batch_are_dropped():
    a = ParsedIdea("Lower the learning rate to 1e-3.", "LR = 1e-3")
    b = ParsedIdea("Lower the  learning rate to 1e-3!", "set LR")  # same experiment, other words around
    c = ParsedIdea("Add dropout 0.1.", "DROPOUT = 0.1")
    assert drop_repeats([a, b, c], avoid=[]) == [a, c]
    assert drop_repeats([a, c], avoid=[c.text]) == [a]
