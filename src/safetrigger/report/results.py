"""``eval/results.json`` → the report's results tables and plot series.

Tables follow ``results.md``: one per judge, rows = models, columns = benchmarks grouped
harmful / jailbreak / over-refusal / capability, then the category means; values in %.
Accuracy rows (judge null) appear in every judge's table. Rows missing a model, benchmark or
numeric value are skipped and counted in ``problems``.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

GROUPS = [  # (group, column-group label, mean-column label)
    ("harmful", "Harmful · ASR ↓", "harmful ASR ↓"),
    ("jailbreak", "Jailbreak · ASR ↓", "jailbreak ASR ↓"),
    ("overrefusal", "Over-refusal · refusal rate ↓", "over-refusal ↓"),
    ("capability", "Capability · accuracy ↑", "capability ↑"),
]
PARTS = ("think", "safe", "answer")


def pct(v) -> str:
    return "–" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{100 * v:.1f}"


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def results_view(results: dict, problems: list[str]) -> dict:
    """Tables and plot series from a parsed results.json; notes go to ``problems``."""
    rows, skipped = [], 0
    for r in results.get("rows") if isinstance(results.get("rows"), list) else []:
        named = isinstance(r, dict) and isinstance(r.get("model"), str) and isinstance(r.get("benchmark"), str)
        if named and _num(r.get("value")) is not None:
            rows.append(r)
        else:
            skipped += 1
    if skipped:
        problems.append(f"eval/results.json: {skipped} row(s) skipped (no model, benchmark or numeric value)")
    if not isinstance(results.get("rows"), list):
        problems.append("eval/results.json has no 'rows' list")

    models = [m for m in _dict(results.get("models"))] or []
    benches = _dict(results.get("benchmarks"))
    for r in rows:  # rows may name models/benchmarks the headers forgot
        if r["model"] not in models:
            models.append(r["model"])
        if r["benchmark"] not in benches:
            benches[r["benchmark"]] = {"group": r.get("group"), "metric": r.get("metric"), "n": r.get("n")}
    judges = list(_dict(results.get("judges")))
    for r in rows:
        if r.get("judge") and r["judge"] not in judges:
            judges.append(r["judge"])

    groups = []
    known = {g for g, _, _ in GROUPS}
    for g, label, _ in GROUPS + [("other", "Other", "other")]:
        names = [b for b, info in benches.items() if (_dict(info).get("group") if _dict(info).get("group") in known else "other") == g]
        if names:
            groups.append({"group": g, "label": label, "benchmarks": names})
    metric = {b: _dict(info).get("metric") for b, info in benches.items()}

    by_key = {(r["model"], r["benchmark"], r.get("judge")): r for r in rows}
    tables = [_table(j, results, models, groups, by_key) for j in (judges or [None])]
    return {
        "created": results.get("created"), "wall_s": _num(results.get("wall_s")),
        "models": [{"name": m, "spec": _dict(_dict(results.get("models")).get(m)).get("spec")} for m in models],
        "benchmarks": [{"name": b, **{k: _dict(i).get(k) for k in ("group", "metric", "n")}} for b, i in benches.items()],
        "judges": [{"name": j, "identity": _dict(results.get("judges")).get(j)} for j in judges],
        "generation": _dict(results.get("generation")),
        "notes": [str(x) for x in results.get("notes") or [] if isinstance(results.get("notes"), list)],
        "groups": groups,
        "mean_columns": [{"group": g, "label": ml} for g, _, ml in GROUPS if any(x["group"] == g for x in groups)],
        "tables": tables,
        "series": _series(rows, models, groups, metric, judges),
    }


def _cell(r: dict | None, bench: str) -> dict:
    if r is None:
        return {"benchmark": bench, "value": None, "pct": "–", "title": "no result"}
    title = ", ".join(f"{k.replace('_', ' ')}={r.get(k)}" for k in ("n", "count", "undecided", "no_answer", "truncated"))
    return {"benchmark": bench, "value": r["value"], "pct": pct(r["value"]), "title": title}


def _table(judge, results, models, groups, by_key) -> dict:
    cm = _dict(results.get("category_means"))
    out_rows = []
    for m in models:
        cells, by_group = [], defaultdict(list)
        for g in groups:
            for b in g["benchmarks"]:
                r = by_key.get((m, b, judge)) or by_key.get((m, b, None))
                cells.append(_cell(r, b))
                if r is not None:
                    by_group[g["group"]].append(r["value"])
        means = []
        for g, _, _ in GROUPS:
            if not any(x["group"] == g for x in groups):
                continue
            stored = _dict(cm.get(m)).get("capability") if g == "capability" else _dict(_dict(cm.get(m)).get(judge)).get(g)
            v = _num(stored)
            if v is None and by_group[g]:  # results.json without category_means: the plain mean
                v = mean(by_group[g])
            means.append({"group": g, "value": v, "pct": pct(v)})
        out_rows.append({"model": m, "cells": cells, "means": means})
    return {"judge": judge, "identity": _dict(results.get("judges")).get(judge), "rows": out_rows}


def _series(rows, models, groups, metric, judges) -> dict:
    by_key = {(r["model"], r["benchmark"], r.get("judge")): r["value"] for r in rows}

    def _val(m, b, j):
        return by_key.get((m, b, j))

    order = [b for g in groups for b in g["benchmarks"]]
    asr_benches = [b for b in order if metric.get(b) == "asr"]
    asr = {}
    for j in judges:
        vals = {m: [_val(m, b, j) for b in asr_benches] for m in models}
        if any(v is not None for vs in vals.values() for v in vs):
            asr[j] = {"benchmarks": asr_benches, "models": vals}
    # Generation properties (safe rate, lengths) do not depend on the judge: first row wins.
    first: dict[tuple, dict] = {}
    for r in rows:
        first.setdefault((r["model"], r["benchmark"]), r)
    activation = {"benchmarks": order, "models": {m: [_num((first.get((m, b)) or {}).get("safe_rate")) for b in order] for m in models}}
    tradeoff = {}
    for j in judges:
        pts = []
        for m in models:
            a = [v for b in asr_benches if (v := _val(m, b, j)) is not None]
            o = [v for b in order if metric.get(b) == "overrefusal" and (v := _val(m, b, j)) is not None]
            if a and o:
                pts.append({"model": m, "x": mean(o), "y": mean(a)})
        if pts:
            tradeoff[j] = pts
    lengths = {}
    for m in models:
        tot, n = defaultdict(float), 0
        for (mm, _), r in first.items():
            mt, w = _dict(r.get("mean_tokens")), _num(r.get("n")) or 1
            if mm == m and mt:
                for p in PARTS:
                    tot[p] += (_num(mt.get(p)) or 0.0) * w
                n += w
        if n:
            lengths[m] = {p: tot[p] / n for p in PARTS}
    return {"asr": asr, "activation": activation, "tradeoff": tradeoff, "lengths": lengths}
