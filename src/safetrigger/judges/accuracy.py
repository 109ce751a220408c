"""Accuracy of the offline refusal judges on PyRIT's 169 human-labelled refusal rows.

The rows (``judges/data/pyrit_refusal_eval.csv``, vendored from pyrit 1.1.0, MIT — see
``judges/data/ATTRIBUTION.md``) pair an objective with an assistant response and a human label:
``human_score`` 1 = refusal (explicit refusal *or* an off-topic non-sequitur), 0 = not a refusal.
A judge verdict counts as "refusal" when ``unsafe is False``; positives below are refusals.

Caveat: the 0.3 threshold and the keyword list were chosen looking at these same rows, so the
number is an in-sample estimate (optimistic); it guards against regressions, it does not
certify the judge on new data. ``safetrigger judge accuracy`` prints this function's result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections import Counter
from importlib.resources import files
from typing import Any

from safetrigger.errors import DataError
from safetrigger.judges.base import Judge, JudgeItem, make_judge
from safetrigger.judges.refusal import DEFAULT_THRESHOLD

DATA_FILE = "judges/data/pyrit_refusal_eval.csv"
COLUMNS = ["objective", "assistant_response", "human_score", "source"]


def load_refusal_eval() -> tuple[list[JudgeItem], list[bool], str]:
    """The labelled rows as JudgeItems, their labels (True = refusal), and the file's sha256[:12]."""
    res = files("safetrigger").joinpath(DATA_FILE)
    if not res.is_file():
        raise DataError(f"refusal eval data missing: safetrigger/{DATA_FILE} (reinstall safetrigger)")
    data = res.read_bytes()
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    if not rows or list(rows[0]) != COLUMNS:
        raise DataError(f"safetrigger/{DATA_FILE}: expected columns {COLUMNS}")
    items, labels, per_source = [], [], Counter()
    for n, r in enumerate(rows, start=1):
        if r["human_score"] not in ("0", "1"):
            raise DataError(f"safetrigger/{DATA_FILE} row {n}: human_score {r['human_score']!r} is not 0/1")
        per_source[r["source"]] += 1  # id = pyrit file + 1-based data row in that file
        items.append(JudgeItem(r["objective"], r["assistant_response"], id=f"{r['source']}:{per_source[r['source']]}"))
        labels.append(r["human_score"] == "1")
    return items, labels, hashlib.sha256(data).hexdigest()[:12]


def score_refusals(judge: Judge, items: list[JudgeItem], labels: list[bool]) -> dict[str, Any]:
    """Accuracy and confusion counts (positive = refusal) of ``judge`` against ``labels``."""
    verdicts = judge.judge(items)
    c = {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "undecided": 0}
    mistakes = []
    for it, v, refusal in zip(items, verdicts, labels):
        if v.unsafe is None:
            c["undecided"] += 1
            mistakes.append(it.id)
            continue
        pred = v.unsafe is False
        c[("t" if pred == refusal else "f") + ("p" if pred else "n")] += 1
        if pred != refusal:
            mistakes.append(it.id)
    n = len(items)
    return {"judge": judge.identity, "n": n, "accuracy": (c["tp"] + c["tn"]) / n if n else 0.0,
            "confusion": c, "mistakes": mistakes}


def refusal_judge_accuracy(threshold: float = DEFAULT_THRESHOLD, batch_size: int = 64,
                           device: str | None = None) -> dict[str, Any]:
    """Score ``refusal-minilm`` and ``refusal-keywords`` on the vendored PyRIT rows.

    Returns ``{"judge", "n", "accuracy", "confusion", "mistakes", "keywords_only_accuracy",
    "keywords_only": {...same keys...}, "data", "seconds"}``; confusion positives are refusals.
    """
    start = time.perf_counter()
    items, labels, sha = load_refusal_eval()
    kw = score_refusals(make_judge("refusal-keywords"), items, labels)
    full = score_refusals(make_judge("refusal-minilm", threshold=threshold, batch_size=batch_size, device=device),
                          items, labels)
    return {**full, "keywords_only_accuracy": kw["accuracy"], "keywords_only": kw,
            "data": f"pyrit-1.1.0 refusal_scorer (sha256 {sha})", "seconds": round(time.perf_counter() - start, 2)}
