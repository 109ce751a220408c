"""``eval/results.json`` → the report's results tables and plot series.

Tables follow ``results.md``: one per judge, rows = models, columns = benchmarks grouped
harmful / jailbreak / over-refusal / general refusal / capability, then the category means;
values in %. Accuracy rows (judge null) appear in every judge's table. Rows missing a model,
benchmark or numeric value are skipped and counted in ``problems``. Intervals (a row's
``rate.ci``, a mean's ``category_means_ci``) go to the cells and the plot series where
results.json has them (older files have none: no interval, no error bar); ``comparisons``
become the p-value table. The trade-off plot's x is the over-refusal group only (``general``,
refusals of everyday requests, is a group of its own with its own mean column).
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

from safetrigger.statistics import ALPHA, SIG_MARK, format_p

GROUPS = [  # (group, column-group label, mean-column label)
    ("harmful", "Harmful · ASR ↓", "harmful ASR ↓"),
    ("jailbreak", "Jailbreak · ASR ↓", "jailbreak ASR ↓"),
    ("overrefusal", "Over-refusal · refusal rate ↓", "over-refusal ↓"),
    ("general", "General · refusal rate ↓", "general refusal ↓"),
    ("capability", "Capability · accuracy ↑", "capability ↑"),
]
PARTS = ("think", "safe", "answer")


def pct(v) -> str:
    return "–" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{100 * v:.1f}"


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def _ci(stat) -> list[float] | None:
    """``[lo, hi]`` of a rate or mean dict, None unless both are numbers."""
    ci = _dict(stat).get("ci")
    if isinstance(ci, list) and len(ci) == 2 and all(_num(x) is not None for x in ci):
        return [float(ci[0]), float(ci[1])]
    return None


def _ci_text(ci) -> str:
    return "" if ci is None else f"{pct(ci[0])}–{pct(ci[1])}"


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
        "comparisons": _comparisons(results, problems),
        "alpha": _alpha(results), "sig_mark": SIG_MARK,
        "series": _series(rows, models, groups, metric, judges, _dict(results.get("category_means_ci"))),
    }


def _cell(r: dict | None, bench: str) -> dict:
    if r is None:
        return {"benchmark": bench, "value": None, "pct": "–", "title": "no result", "ci": None}
    ci = _ci(r.get("rate"))
    title = ", ".join(f"{k.replace('_', ' ')}={r.get(k)}" for k in ("n", "count", "undecided", "no_answer", "truncated"))
    if ci is not None:
        title = f"95% CI {_ci_text(ci)} %, " + title
    return {"benchmark": bench, "value": r["value"], "pct": pct(r["value"]), "title": title, "ci": ci}


def _table(judge, results, models, groups, by_key) -> dict:
    cm, cmci = _dict(results.get("category_means")), _dict(results.get("category_means_ci"))
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
            stat = _dict(cmci.get(m)).get("capability") if g == "capability" else _dict(_dict(cmci.get(m)).get(judge)).get(g)
            ci = _ci(stat) if v is not None else None
            means.append({"group": g, "value": v, "pct": pct(v), "ci": ci,
                          "title": f"95% bootstrap CI {_ci_text(ci)} % over {_dict(stat).get('n')} queries" if ci else "no interval"})
        out_rows.append({"model": m, "cells": cells, "means": means})
    return {"judge": judge, "identity": _dict(results.get("judges")).get(judge), "rows": out_rows}


def _comparisons(results: dict, problems: list[str]) -> list[dict]:
    """The paired tests of results.json as table lines (malformed entries skipped, counted)."""
    comp = _dict(results.get("comparisons"))
    alpha = _alpha(results)
    out, bad = [], 0
    for t in comp.get("tests") if isinstance(comp.get("tests"), list) else []:
        t = _dict(t)
        p = _num(t.get("p"))
        if p is None or not all(isinstance(t.get(k), str) for k in ("model", "reference", "benchmark", "metric")):
            bad += 1
            continue
        mr, rr = _dict(t.get("model_rate")), _dict(t.get("reference_rate"))
        out.append({"model": t["model"], "reference": t["reference"], "benchmark": t["benchmark"], "judge": t.get("judge"),
                    "metric": t["metric"], "model_pct": pct(mr.get("value")), "model_ci": _ci_text(_ci(mr)),
                    "reference_pct": pct(rr.get("value")), "reference_ci": _ci_text(_ci(rr)),
                    "b01": t.get("b01"), "b10": t.get("b10"), "n_pairs": t.get("n_pairs"), "p": p,
                    "p_text": format_p(p, alpha), "significant": p < alpha})
    if bad:
        problems.append(f"eval/results.json: {bad} comparison(s) skipped (no p-value or names)")
    return out


def _alpha(results: dict) -> float:
    """The significance level results.json was marked with (this version's when it says none)."""
    return _num(_dict(results.get("statistics")).get("alpha")) or ALPHA


def _err(v, ci) -> tuple[float, float] | None:
    """(below, above) distances of an interval from its value, for an error bar."""
    if v is None or ci is None:
        return None
    return max(0.0, v - ci[0]), max(0.0, ci[1] - v)


def _series(rows, models, groups, metric, judges, cmci=None) -> dict:
    by_key = {(r["model"], r["benchmark"], r.get("judge")): r for r in rows}

    def _val(m, b, j):
        r = by_key.get((m, b, j))
        return None if r is None else r["value"]

    def _row_err(m, b, j):
        r = by_key.get((m, b, j))
        return None if r is None else _err(r["value"], _ci(r.get("rate")))

    order = [b for g in groups for b in g["benchmarks"]]
    asr_benches = [b for b in order if metric.get(b) == "asr"]
    # x of the trade-off: the over-refusal group (as its category-mean interval), not general
    overrefusal = [b for g in groups if g["group"] == "overrefusal" for b in g["benchmarks"] if metric.get(b) == "overrefusal"]
    asr = {}
    for j in judges:
        vals = {m: [_val(m, b, j) for b in asr_benches] for m in models}
        if any(v is not None for vs in vals.values() for v in vs):
            asr[j] = {"benchmarks": asr_benches, "models": vals,
                      "errors": {m: [_row_err(m, b, j) for b in asr_benches] for m in models}}
    # Generation properties (safe rate, lengths) do not depend on the judge: first row wins.
    first: dict[tuple, dict] = {}
    for r in rows:
        first.setdefault((r["model"], r["benchmark"]), r)

    def _safe(m, b):
        r = first.get((m, b)) or {}
        return _num(r.get("safe_rate")), _err(_num(r.get("safe_rate")), _ci(r.get("safe")))

    activation = {"benchmarks": order, "models": {m: [_safe(m, b)[0] for b in order] for m in models},
                  "errors": {m: [_safe(m, b)[1] for b in order] for m in models}}
    tradeoff = {}
    for j in judges:
        pts = []
        for m in models:
            a = [v for b in asr_benches if (v := _val(m, b, j)) is not None]
            o = [v for b in overrefusal if (v := _val(m, b, j)) is not None]
            if a and o:
                x, y = mean(o), mean(a)
                stats = _dict(_dict(_dict(cmci).get(m)).get(j))
                pts.append({"model": m, "x": x, "y": y, "x_err": _err(x, _ci(stats.get("overrefusal"))),
                            "y_err": _err(y, _ci(stats.get("risky")))})
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
