import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safetrigger import response_format as rf
from safetrigger.response_format import parse, render

# Part texts: anything without our tags (the property the renderer relies on).
part = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60).filter(lambda s: not rf.has_format_tags(s))
nonblank = part.filter(lambda s: s.strip() != "")


@given(think=part, safe=st.none() | nonblank, answer=nonblank)
@settings(max_examples=300, deadline=None)
def test_round_trip(think, safe, answer):
    p = parse(render(think, answer, safe))
    assert p.think == think.strip()
    assert p.safe == (safe.strip() if safe is not None else None)
    assert p.answer == answer.strip()
    assert p.well_formed and p.think_closed
    assert p.has_safe == (safe is not None)
    assert parse(render(p.think, p.answer, p.safe)) == p


@given(st.lists(st.sampled_from(["<think>", "</think>", "<safe>", "</safe>", "x", " ", "\n", "ans"]), max_size=14))
@settings(max_examples=500, deadline=None)
def test_never_raises_and_flags_are_consistent(tokens):
    text = "".join(tokens)
    p = parse(text)
    if p.has_safe:
        assert p.think_closed
        assert text.count("<safe>") == 1 and text.count("</safe>") == 1
        assert text.index("</think>") < text.index("<safe>") < text.index("</safe>")
    if p.truncated:
        assert p.answer == ""
    if p.well_formed:
        assert not rf.has_format_tags(p.answer)


def test_canonical_shape():
    assert render("t", "a", "s") == "<think>\nt\n</think>\n\n<safe>\ns\n</safe>\n\na"
    assert render(None, "a") == "a"


@pytest.mark.parametrize(
    "text, issue, has_safe, answer",
    [
        ("<think>reasoning that never ends", rf.THINK_UNCLOSED, False, ""),
        ("<think>r</think><safe>analysis cut", rf.SAFE_UNCLOSED, False, ""),
        ("<think>r</think>answer</safe>", rf.SAFE_UNOPENED, False, "answer</safe>"),
        ("<safe>s</safe><think>r</think>a", rf.SAFE_BEFORE_THINK, False, "a"),
        ("<think>r<safe>s</safe></think>a", rf.SAFE_BEFORE_THINK, False, "a"),
        ("<think>r</think><safe>1</safe><safe>2</safe>a", rf.MULTIPLE_SAFE, False, None),
        ("<think>a</think><think>b</think>c", rf.MULTIPLE_THINK, False, None),
        ("<think>r</think>", rf.EMPTY_ANSWER, False, ""),
        ("just an answer", rf.NO_THINK, False, "just an answer"),
        ("hello <think>r</think>a", rf.TEXT_BEFORE_THINK, False, "a"),
        ("<think>r</think>oops<safe>s</safe>a", rf.TEXT_BETWEEN, True, "a"),
    ],
)
def test_malformed_inputs_are_flagged(text, issue, has_safe, answer):
    p = parse(text)
    assert issue in p.issues
    assert p.has_safe is has_safe
    if answer is not None:
        assert p.answer == answer


def test_think_opened_by_prompt():
    p = parse("reasoning\n</think>\n\n<safe>\nrisk\n</safe>\n\nNo.", think_opened_in_prompt=True)
    assert (p.think, p.safe, p.answer, p.has_safe) == ("reasoning", "risk", "No.", True)
    assert p.issues == []
    q = parse("reasoning\n</think>\n\nanswer")
    assert rf.IMPLICIT_THINK_OPEN in q.issues and q.well_formed and q.think == "reasoning"


def test_well_formed_vs_errors():
    assert parse("<think>r</think><safe>s</safe>a").well_formed
    assert not parse("<think>r</think><safe>s").well_formed
    assert parse("<think>r</think><safe>s").truncated
