"""The Safe Trigger response format: ``<think>…</think>`` [``<safe>…</safe>``] answer.

One parser for every stage, so "did the model emit a complete block" means the same thing
in data building, DPO scoring and evaluation. Parsing never raises: whatever is odd about a
completion is reported in :attr:`ParsedResponse.issues` and the caller applies its policy.

Canonical rendering (what training targets look like)::

    <think>\\n{think}\\n</think>\\n\\n<safe>\\n{safe}\\n</safe>\\n\\n{answer}

Completions may omit the opening ``<think>`` (R1-style templates put it in the prompt); the
parser accepts that and flags it as ``implicit_think_open``, not as an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SAFE_OPEN, SAFE_CLOSE = "<safe>", "</safe>"
_TAG = re.compile(r"</?(?:think|safe)>")

# Issue codes. A response is *well formed* when none of the ERROR_ISSUES is present.
NO_THINK = "no_think"  # no reasoning block at all
IMPLICIT_THINK_OPEN = "implicit_think_open"  # '</think>' without '<think>' (opened by the prompt)
THINK_UNCLOSED = "think_unclosed"  # '<think>' never closed: truncated or runaway reasoning
SAFE_UNCLOSED = "safe_unclosed"  # '<safe>' opened, never closed
SAFE_UNOPENED = "safe_unopened"  # '</safe>' with no '<safe>'
SAFE_BEFORE_THINK = "safe_before_think"  # block placed before/inside the reasoning
MULTIPLE_THINK = "multiple_think"
MULTIPLE_SAFE = "multiple_safe"
TEXT_BEFORE_THINK = "text_before_think"  # non-whitespace before '<think>'
TEXT_BETWEEN = "text_between_think_and_safe"  # non-whitespace between '</think>' and '<safe>'
TAG_IN_ANSWER = "tag_in_answer"  # stray format tags left in the final answer
EMPTY_ANSWER = "empty_answer"

ERROR_ISSUES = frozenset(
    {THINK_UNCLOSED, SAFE_UNCLOSED, SAFE_UNOPENED, SAFE_BEFORE_THINK, MULTIPLE_THINK, MULTIPLE_SAFE, TAG_IN_ANSWER}
)


@dataclass
class ParsedResponse:
    """The parts of one completion, plus what was odd about it."""

    think: str | None = None
    """Reasoning text, stripped; None when there is no reasoning block."""
    safe: str | None = None
    """Safety analysis text, stripped; None when no block was opened."""
    answer: str = ""
    """Final answer: the text after the last structural tag, stripped."""
    think_closed: bool = False
    """True when '</think>' was seen."""
    safe_complete: bool = False
    """True when exactly one '<safe>…</safe>' block stands after '</think>' (what activation counts)."""
    issues: list[str] = field(default_factory=list)
    """Issue codes (module constants), in the order found."""

    @property
    def has_safe(self) -> bool:
        return self.safe_complete

    @property
    def well_formed(self) -> bool:
        return not (set(self.issues) & ERROR_ISSUES)

    @property
    def truncated(self) -> bool:
        """Reasoning or analysis was cut off: there is no trustworthy final answer."""
        return THINK_UNCLOSED in self.issues or SAFE_UNCLOSED in self.issues


def parse(text: str, think_opened_in_prompt: bool = False) -> ParsedResponse:
    """Split a raw completion into think / safe / answer and flag anything malformed.

    ``think_opened_in_prompt``: the prompt already ended with ``<think>`` (R1 templates,
    prompted reasoning), so the completion starts inside the reasoning.
    """
    out = ParsedResponse()
    tags = [(m.group(0), m.start(), m.end()) for m in _TAG.finditer(text)]
    names = [t[0] for t in tags]
    if think_opened_in_prompt and THINK_OPEN not in names[:1]:
        text = THINK_OPEN + text
        tags = [(m.group(0), m.start(), m.end()) for m in _TAG.finditer(text)]
        names = [t[0] for t in tags]
    issues = out.issues

    if names.count(THINK_OPEN) > 1 or names.count(THINK_CLOSE) > 1:
        issues.append(MULTIPLE_THINK)
    if names.count(SAFE_OPEN) > 1 or names.count(SAFE_CLOSE) > 1:
        issues.append(MULTIPLE_SAFE)

    # --- reasoning block: from the first <think> (or text start) to the first </think>
    i_open = names.index(THINK_OPEN) if THINK_OPEN in names else None
    i_close = names.index(THINK_CLOSE) if THINK_CLOSE in names else None
    if i_close is not None and i_open is not None and i_open > i_close:
        i_open = None  # a '<think>' after '</think>' is stray, not an opener
    cursor = 0  # text position where the post-think region starts
    if i_open is None and i_close is None:
        issues.append(NO_THINK)
    elif i_close is None:
        _, _, end = tags[i_open]
        if text[: tags[i_open][1]].strip():
            issues.append(TEXT_BEFORE_THINK)
        issues.append(THINK_UNCLOSED)
        out.think = _strip_tags(text[end:]).strip()
        return out  # nothing after an unclosed think is an answer
    else:
        start = tags[i_open][2] if i_open is not None else 0
        if i_open is None:
            issues.append(IMPLICIT_THINK_OPEN)
        elif text[: tags[i_open][1]].strip():
            issues.append(TEXT_BEFORE_THINK)
        inner = text[start : tags[i_close][1]]
        if _TAG.search(inner) and (SAFE_OPEN in inner or SAFE_CLOSE in inner):
            issues.append(SAFE_BEFORE_THINK)
        out.think = _strip_tags(inner).strip()
        out.think_closed = True
        cursor = tags[i_close][2]

    # --- safety block: first <safe> after the reasoning
    rest = text[cursor:]
    safe_tags = [(n, s, e) for n, s, e in tags if s >= cursor and n in (SAFE_OPEN, SAFE_CLOSE)]
    before_think = [t for t in tags if t[1] < cursor and t[0] in (SAFE_OPEN, SAFE_CLOSE)]
    if before_think and SAFE_BEFORE_THINK not in issues:
        issues.append(SAFE_BEFORE_THINK)
    if safe_tags and safe_tags[0][0] == SAFE_CLOSE:
        issues.append(SAFE_UNOPENED)
    opener = next((t for t in safe_tags if t[0] == SAFE_OPEN), None)
    if opener is not None:
        if text[cursor : opener[1]].strip():
            issues.append(TEXT_BETWEEN)
        closer = next((t for t in safe_tags if t[0] == SAFE_CLOSE and t[1] > opener[1]), None)
        if closer is None:
            issues.append(SAFE_UNCLOSED)
            out.safe = _strip_tags(text[opener[2] :]).strip()
            return out
        out.safe = text[opener[2] : closer[1]].strip()
        out.safe_complete = (
            out.think_closed
            and MULTIPLE_SAFE not in issues
            and SAFE_BEFORE_THINK not in issues
            and not _TAG.search(out.safe)
        )
        cursor = closer[2]
        rest = text[cursor:]

    if _TAG.search(rest):
        issues.append(TAG_IN_ANSWER)
    out.answer = rest.strip()
    if not out.answer:
        issues.append(EMPTY_ANSWER)
    return out


def _strip_tags(s: str) -> str:
    return _TAG.sub("", s)


def render(think: str | None, answer: str, safe: str | None = None) -> str:
    """Canonical text of a response (assistant turn content), the inverse of :func:`parse`."""
    parts = []
    if think is not None:
        parts.append(f"{THINK_OPEN}\n{think.strip()}\n{THINK_CLOSE}\n\n")
    if safe is not None:
        parts.append(f"{SAFE_OPEN}\n{safe.strip()}\n{SAFE_CLOSE}\n\n")
    parts.append(answer.strip())
    return "".join(parts)


def has_format_tags(text: str) -> bool:
    """True when ``text`` contains any think/safe tag (such text cannot be a clean part)."""
    return bool(_TAG.search(text))
