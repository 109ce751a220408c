"""Summary statistics shared by the stages that generate text."""

from __future__ import annotations

from collections import Counter, defaultdict

from safetrigger.statistics import percentiles


def safe_opened(row: dict) -> bool:
    """A ``<safe>`` tag was written after the reasoning, complete block or not (weak models
    often open the block and never close it; ``has_safe`` counts complete blocks only)."""
    from safetrigger.response_format import SAFE_OPEN, THINK_CLOSE

    return SAFE_OPEN in (row.get("response") or "").split(THINK_CLOSE, 1)[-1]


def generation_stats(rows: list[dict]) -> dict:
    """Counts per category, finish reasons, budget hits, format issues, token lengths."""
    by_cat: dict[str, Counter] = defaultdict(Counter)
    issues = Counter()
    for r in rows:
        c = by_cat[r.get("category", "?")]
        c["rows"] += 1
        c[f"think_finish:{r.get('think_finish')}"] += 1
        c[f"answer_finish:{r.get('answer_finish')}"] += 1
        c["budget_hit"] += bool(r.get("budget_hit"))
        c["has_safe"] += bool(r.get("has_safe"))
        c["safe_opened"] += safe_opened(r)
        issues.update(r.get("issues", []))
    return {
        "rows": len(rows),
        "per_category": {k: dict(v) for k, v in sorted(by_cat.items())},
        "issues": dict(issues),
        "think_tokens": percentiles([r.get("think_tokens", 0) for r in rows]),
        "answer_tokens": percentiles([r.get("answer_tokens", 0) for r in rows]),
    }
