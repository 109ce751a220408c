"""Scorers for capability benchmarks: read the final answer of a model and compare it to gold.

Scorers see the *final answer only* (reasoning already stripped by `response_format.parse`).
They are lenient about presentation (``$1,234.00``, ``**42**``, ``The answer is 42.``) and
strict about the value, so a score measures the ability, not the formatting.

Number extraction order (first that applies): the last ``\\boxed{…}``; the text after the last
``####`` (GSM8K's own marker); after the last "answer is" / "answer:", in that sentence, the
first number after its last ``=`` (else its first number: "The answer is 18 (3 x 6)." is 18);
the last number in the text. Commas as thousands separators, a leading ``$``, a trailing ``%`` or
``.``, and trailing zeros (``18.00`` = ``18``) are handled; fractions and words are not (except
with ``words=True``, which reads "zero"…"twenty" when the text has no digits at all).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

# A sign counts only at the start of a number, not as an operator: the "-" of "10-5" is
# preceded by a word character, so "5" is read there, not "-5".
_NUMBER = re.compile(r"(?<![\w.])([-\u2212]?)\$?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_CUE = re.compile(r"answer\s*(?:is|:|=)", re.I)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen twenty").split()
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.I)


def _numbers(text: str) -> list[Decimal]:
    out = []
    for sign, whole, frac in _NUMBER.findall(text):
        try:
            out.append(Decimal(("-" if sign else "") + whole.replace(",", "") + ("." + frac if frac else "")))
        except InvalidOperation:  # pragma: no cover - the regex only admits digits
            continue
    return out


def final_number(text: str, words: bool = False) -> Decimal | None:
    """The number a final answer commits to (see the module docstring), or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    boxed = _BOXED.findall(text)
    if boxed:
        nums = _numbers(boxed[-1])
        if nums:
            return nums[-1]
    if "####" in text:
        nums = _numbers(text.rsplit("####", 1)[1])
        if nums:
            return nums[0]
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        sentence = _SENTENCE_END.split(text[cues[-1].end():], 1)[0]
        nums = _numbers(sentence.rsplit("=", 1)[-1]) or _numbers(sentence)
        if nums:
            return nums[0]
    nums = _numbers(text)
    if nums:
        return nums[-1]
    if words:
        found = _WORD_NUMBER.findall(text)
        if found:
            return Decimal(_WORDS.index(found[-1].lower()))
    return None


def parse_gold(value: Any) -> Decimal | None:
    """A gold answer ("2280", "1,000", 18.0) as a number; None when it is not one."""
    nums = _numbers(str(value))
    return nums[-1] if nums else None


def numbers_equal(pred: Decimal | None, gold: Any) -> bool:
    """Exact numeric match (18.00 == 18); a missing prediction or gold never matches."""
    g = parse_gold(gold)
    return pred is not None and g is not None and pred == g


def score_number(query, answer: str) -> bool:
    """Exact match of the final number against ``query.meta["answer"]`` (GSM8K, arith)."""
    return numbers_equal(final_number(answer), query.meta.get("answer"))


def score_count(query, answer: str) -> bool:
    """Like `score_number`, also reading number words ("three") when no digit is present."""
    return numbers_equal(final_number(answer, words=True), query.meta.get("answer"))


def score_sorted_words(query, answer: str) -> bool:
    """The last ``n`` of the task's words mentioned in the answer are its words in alphabetical
    order (so restating the input first is fine; a missing, extra-late or misordered word fails)."""
    words = [w.lower() for w in query.meta.get("words", [])]
    if not words or not isinstance(answer, str):
        return False
    wanted = set(words)
    said = [t for t in re.findall(r"[a-z]+", answer.lower()) if t in wanted]
    return said[-len(words):] == sorted(words)


__all__ = ["final_number", "numbers_equal", "parse_gold", "score_count", "score_number", "score_sorted_words"]
