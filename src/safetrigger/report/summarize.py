"""One summary per pipeline stage from its ``<stage>.stats.json``: generated / kept / dropped,
the reasons for drops, and a few facts worth a glance.

Each summary is ``{"generated", "kept", "dropped", "reasons": {reason: n}, "reason_note",
"facts": [(label, text)], "per_category": [{"category", "generated", "kept", "dropped"}]}``;
numbers a stage does not have are None. Unexpected shapes raise (the caller reports them).
"""

from __future__ import annotations

from typing import Any, Callable


def _n(x) -> int | float | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _pct(x) -> str:
    return "–" if _n(x) is None else f"{100 * x:.1f}%"


def _counts(d) -> dict[str, int]:
    return {str(k): v for k, v in (d or {}).items() if _n(v) is not None}


def _base(stats: dict) -> dict[str, Any]:
    return {"generated": _n(stats.get("rows")), "kept": None, "dropped": None, "reasons": {},
            "reason_note": None, "facts": [], "per_category": []}


def _per_category_rows(stats: dict, out: dict) -> None:
    for cat, c in (stats.get("per_category") or {}).items():
        out["per_category"].append({"category": cat, "generated": _n(c.get("rows")), "kept": None, "dropped": None})


def _generation(stats: dict) -> dict:
    out = _base(stats)
    _per_category_rows(stats, out)
    cats = (stats.get("per_category") or {}).values()
    if stats.get("per_category"):
        out["facts"].append(("thinking budget hit", str(sum(_n(c.get("budget_hit")) or 0 for c in cats))))
    for part in ("think_tokens", "answer_tokens"):
        q = stats.get(part)
        if isinstance(q, dict) and q:
            quantiles = " / ".join(str(q.get(k, "–")) for k in ("p50", "p90", "p100"))
            out["facts"].append((f"{part.replace('_', ' ')} p50 / p90 / max", quantiles))
    if stats.get("issues"):
        out["facts"].append(("format issues", ", ".join(f"{k} {v}" for k, v in _counts(stats["issues"]).items())))
    if isinstance(stats.get("safe_rate"), dict):
        out["facts"].append(("<safe> rate", ", ".join(f"{k} {_pct(v)}" for k, v in stats["safe_rate"].items())))
    return out


def _trigger(stats: dict) -> dict:
    out = _base(stats)
    out["kept"] = _n(stats.get("accepted"))
    if out["generated"] is not None and out["kept"] is not None:
        out["dropped"] = out["generated"] - out["kept"]
    out["reasons"] = _counts(stats.get("failure_reasons"))
    out["reason_note"] = "failure reasons count attempts (a row may be resampled), not rows"
    for cat, c in (stats.get("per_category") or {}).items():
        rows, acc = _n(c.get("rows")), _n(c.get("accepted"))
        out["per_category"].append({"category": cat, "generated": rows, "kept": acc,
                                    "dropped": rows - acc if rows is not None and acc is not None else None})
    if _n(stats.get("attempts_total")) is not None:
        out["facts"].append(("attempts", str(stats["attempts_total"])))
    judge = stats.get("judge") or {}
    if judge:
        out["facts"].append(("judge unsafe rate", _pct(judge.get("unsafe_rate"))))
    return out


def _build_sft(stats: dict) -> dict:
    out = _base(stats)
    out["generated"], out["kept"], out["dropped"] = (_n(stats.get(k)) for k in ("generated", "kept", "dropped"))
    out["reasons"] = _counts(stats.get("dropped_reasons_total"))
    for cat, c in (stats.get("accounting") or {}).items():
        out["per_category"].append({"category": cat, **{k: _n(c.get(k)) for k in ("generated", "kept", "dropped")}})
    if "accounting_ok" in stats:
        out["facts"].append(("kept + dropped = generated", "yes" if stats["accounting_ok"] else "NO"))
    caveats: dict[str, int] = {}
    for c in (stats.get("kept_with_caveats") or {}).values():
        for k, v in _counts(c).items():
            caveats[k] = caveats.get(k, 0) + v
    if caveats:
        out["facts"].append(("kept with caveats", ", ".join(f"{k} {v}" for k, v in caveats.items())))
    return out


def _training(stats: dict) -> dict:
    out = _base(stats)
    out["generated"] = _n(stats.get("examples_in_file", stats.get("examples")))
    out["kept"] = _n(stats.get("examples"))
    out["dropped"] = _n(stats.get("dropped_overlong"))
    if out["dropped"]:
        out["reasons"] = {"overlong": out["dropped"]}
    for key, label in (("train_loss", "train loss"), ("steps", "steps"), ("epochs", "epochs"),
                       ("max_length", "max length"), ("trained_tokens", "trained tokens"), ("runtime_s", "runtime s")):
        v = _n(stats.get(key))
        if v is not None:
            out["facts"].append((label, f"{v:.4g}" if isinstance(v, float) else str(v)))
    return out


def _score(stats: dict) -> dict:
    out = _base(stats)
    rates = stats.get("flag_rates") or {}
    if rates:
        out["facts"].append(("flag rates", ", ".join(f"{k} {_pct(v)}" for k, v in rates.items())))
    if stats.get("policy_counts"):
        out["facts"].append(("policies", ", ".join(f"{k} {v}" for k, v in _counts(stats["policy_counts"]).items())))
    if stats.get("judge_labels"):
        out["facts"].append(("judge labels", ", ".join(f"{k} {v}" for k, v in _counts(stats["judge_labels"]).items())))
    return out


def _build_dpo(stats: dict) -> dict:
    out = _base(stats)
    out["generated"], out["kept"], out["dropped"] = (_n(stats.get(k)) for k in ("queries", "kept", "dropped"))
    out["reason_note"] = "counted per query (one pair per kept query)"
    out["reasons"] = _counts(stats.get("dropped_reasons"))
    if stats.get("flag_rates"):
        out["facts"].append(("flag rates", ", ".join(f"{k} {_pct(v)}" for k, v in stats["flag_rates"].items())))
    for key in ("chosen_with_safe", "rejected_with_safe"):
        if _n(stats.get(key)) is not None:
            out["facts"].append((key.replace("_", " "), str(stats[key])))
    return out


SUMMARIZERS: dict[str, Callable[[dict], dict]] = {
    "generate": _generation, "activation": _generation, "sample": _generation,
    "trigger": _trigger, "build_sft": _build_sft, "sft": _training, "dpo": _training,
    "score": _score, "build_dpo": _build_dpo,
}


def summarize_stage(name: str, stats: dict) -> dict:
    """The summary of stage ``name`` (any other name: rows only)."""
    return SUMMARIZERS.get(name, _base)(stats)
