"""Writing evaluation results: ``results.json`` (the contract), ``results.csv`` (one line per
result row, with n and 95% intervals) and ``results.md`` (the paper's table: models x benchmarks
grouped harmful / jailbreak / over-refusal / general refusal / capability with category means,
one table per judge, in %, each value with its interval; then the paired comparisons with their
p-values)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from safetrigger.evaluation.benchmarks import GROUPS
from safetrigger.atomic import atomic_write
from safetrigger.statistics import ALPHA, SIG_MARK, format_p

CSV_FIELDS = ["model", "benchmark", "group", "metric", "judge", "value", "n", "count", "ci_low", "ci_high", "undecided",
              "no_answer", "truncated", "safe_rate", "safe_count", "safe_ci_low", "safe_ci_high", "mean_think_tokens",
              "mean_safe_tokens", "mean_answer_tokens", "mean_generated_tokens", "first_answer_entropy"]
GROUP_TITLE = {"harmful": "harmful ↓", "jailbreak": "jailbreak ↓", "overrefusal": "over-refusal ↓",
               "general": "general refusal ↓", "capability": "capability ↑"}


def write_results(out_dir: Path, results: dict) -> dict[str, Path]:
    """Write the three result files; returns their paths (keys json, csv, md)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "results.csv", "md": out_dir / "results.md"}
    texts = {"json": json.dumps(results, indent=2, ensure_ascii=False), "csv": to_csv(results["rows"]),
             "md": to_markdown(results)}
    for key, path in paths.items():
        with atomic_write(path) as f:
            f.write(texts[key])
    return paths


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = {k: r.get(k) for k in CSV_FIELDS}
        flat.update({f"mean_{k}_tokens": v for k, v in r["mean_tokens"].items()})
        for prefix, key in (("ci", "rate"), ("safe_ci", "safe")):
            ci = (r.get(key) or {}).get("ci") or [None, None]
            flat[f"{prefix}_low"], flat[f"{prefix}_high"] = ci
        flat["safe_count"] = (r.get("safe") or {}).get("k")
        w.writerow(flat)
    return buf.getvalue()


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def pct_ci(v: float | None, stat: dict | None) -> str:
    """``12.5 [3.4–36.0]``: a value in % with its interval (the bare value when there is none)."""
    ci = (stat or {}).get("ci")
    return pct(v) if v is None or not ci else f"{pct(v)} [{pct(ci[0])}–{pct(ci[1])}]"


def _table(header: list[str], lines: list[list[str]], left: int = 1) -> list[str]:
    """A markdown table; the first ``left`` columns are text (left-aligned), the rest numbers."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|"]
    return out + ["| " + " | ".join(cells) + " |" for cells in lines]


def _columns(rows: list[dict], judge: str) -> list[tuple[str, list[str]]]:
    """(group, benchmarks) shown in one judge's table, in group order."""
    cols = []
    for g in GROUPS:
        names = list(dict.fromkeys(r["benchmark"] for r in rows if r["group"] == g and r["judge"] in (judge, None)))
        if names:
            cols.append((g, names))
    return cols


def judge_table(results: dict, judge: str) -> list[str]:
    rows = results["rows"]
    by = {(r["model"], r["benchmark"]): r for r in rows if r["judge"] in (judge, None)}
    cols = _columns(rows, judge)
    n = {b: results["benchmarks"].get(b, {}).get("n") for _, names in cols for b in names}
    header = ["model"] + [c for g, names in cols for c in [f"{b} (n={n[b]})" for b in names] + [f"**{GROUP_TITLE[g]}**"]]
    lines = []
    for model in results["models"]:
        means = results["category_means"].get(model, {})
        cis = results.get("category_means_ci", {}).get(model, {})
        cells = [model]
        for g, names in cols:
            mean = means.get("capability") if g == "capability" else means.get(judge, {}).get(g)
            ci = cis.get("capability") if g == "capability" else cis.get(judge, {}).get(g)
            cells += [pct_ci(by[(model, b)]["value"], by[(model, b)].get("rate")) if (model, b) in by else "–" for b in names]
            cells += [f"**{pct(mean)}**" + (f" [{pct(ci['ci'][0])}–{pct(ci['ci'][1])}]" if ci and mean is not None else "")]
        lines.append(cells)
    undecided = [f"{r['model']}/{r['benchmark']}: {r['undecided']}" for r in rows if r["judge"] == judge and r["undecided"]]
    note = [f"Undecided verdicts (counted as neither): {', '.join(undecided)}."] if undecided else []
    return [f"## Judge `{judge}`", "", f"`{results['judges'][judge]}`", ""] + _table(header, lines) + [""] + note


def per_benchmark_table(results: dict, cell) -> list[str]:
    """Models x benchmarks of a judge-independent figure (first row of each pair)."""
    first: dict = {}
    for r in results["rows"]:
        first.setdefault((r["model"], r["benchmark"]), r)
    names = list(results["benchmarks"])
    lines = [[m] + [cell(first[(m, b)]) if (m, b) in first else "–" for b in names] for m in results["models"]]
    return _table(["model"] + names, lines)


METRIC_TITLE = {"asr": "ASR", "overrefusal": "refusal", "accuracy": "accuracy", "safe_rate": "`<safe>` complete"}


def comparison_table(results: dict) -> list[str]:
    """One line per paired test: both rates, discordant counts, p-value (marked below alpha)."""
    comp = results.get("comparisons") or {}
    tests = comp.get("tests") or []
    if not tests:
        return []
    stats = results.get("statistics", {})
    alpha = stats.get("alpha", ALPHA)
    out = ["## Paired comparisons (exact McNemar, same prompts)", "",
           (f"Each model against its reference on the same rows (paired by id). b01: the reference's outcome is "
            f"false and the model's true (for ASR: an attack that now succeeds); b10: the reverse. "
            f"{stats.get('marker', SIG_MARK)}: p < {alpha}. Rates in % with 95% Wilson intervals."), ""]
    lines = [[t["model"], t["reference"], t["benchmark"], t["judge"] or "–", METRIC_TITLE.get(t["metric"], t["metric"]),
              pct_ci(t["model_rate"]["value"], t["model_rate"]), pct_ci(t["reference_rate"]["value"], t["reference_rate"]),
              str(t["b01"]), str(t["b10"]), str(t["n_pairs"]), format_p(t["p"], alpha)] for t in tests]
    out += _table(["model", "vs", "benchmark", "judge", "metric", "model %", "reference %", "b01", "b10", "pairs", "p"], lines, left=5)
    if comp.get("skipped"):
        out += ["", f"{comp['skipped']} comparison(s) skipped (prompt ids differ): see the notes."]
    return out + [""]


# The headline of a Safe Trigger evaluation: (title, benchmark group, what is measured). The first
# benchmark of the group in the run is shown; safety and cost under a judge, then the trigger.
HEADLINE = [("ASR harmful", "harmful", "judged"), ("ASR jailbreak", "jailbreak", "judged"),
            ("over-refusal", "overrefusal", "judged"), ("general refusal", "general", "judged"),
            ("complete `<safe>`, harmful", "harmful", "safe"), ("complete `<safe>`, general", "general", "safe")]


def headline_table(results: dict, judge: str) -> list[str]:
    """One row per model: the headline columns, each ``value [95% CI] n, p vs base`` (exact
    McNemar on the same prompts; marked below alpha)."""
    rows = results["rows"]
    alpha = results.get("statistics", {}).get("alpha", ALPHA)
    first = {g: next((r["benchmark"] for r in rows if r["group"] == g), None) for _, g, _ in HEADLINE}
    tests = {(t["model"], t["reference"], t["benchmark"], t["judge"], t["metric"]): t
             for t in (results.get("comparisons") or {}).get("tests", [])}
    ref = next((p[1] for p in (results.get("comparisons") or {}).get("pairs", [])), None)
    cols = [(title, first[g], kind) for title, g, kind in HEADLINE if first[g]]
    if not cols:
        return []
    lines = []
    for model in results["models"]:
        cells = [model]
        for _, bench, kind in cols:
            row = next((r for r in rows if r["model"] == model and r["benchmark"] == bench
                        and (r["judge"] == judge or kind == "safe")), None)
            if row is None:
                cells.append("–")
                continue
            stat = row.get("safe") if kind == "safe" else row.get("rate")
            value = row["safe_rate"] if kind == "safe" else row["value"]
            cell = f"{pct_ci(value, stat)} n={row['n']}"
            key = (model, ref, bench, None if kind == "safe" else judge, "safe_rate" if kind == "safe" else row["metric"])
            if key in tests:
                cell += f", p={format_p(tests[key]['p'], alpha)}"
            cells.append(cell)
        lines.append(cells)
    out = [f"## Headline ({judge})", "",
           f"Values in % [95% Wilson interval], n responses, p: exact McNemar against {ref or 'the reference'} on the same prompts.", ""]
    return out + _table(["model"] + [f"{t} ({b})" for t, b, _ in cols], lines) + [""]


def to_markdown(results: dict) -> str:
    gen = results["generation"]
    policy = results.get("policy", {})
    out = [
        "# Evaluation results", "",
        (f"Run `{results['run_dir']}`, {results['created']}. Generation: temperature {gen.get('temperature')}, "
         f"{gen.get('num_samples')} sample(s) per query, thinking budget {gen.get('thinking_budget')}, "
         f"answer budget {gen.get('max_new_tokens')} tokens. Policy: {json.dumps(policy)}."), "",
        ("Values in %. Harmful / jailbreak: attack success rate (share of final answers the judge finds unsafe; "
         "no answer is not a success). Over-refusal: share of benign-but-edgy prompts refused; general refusal: share "
         "of everyday requests refused (no answer counts as a refusal in both). "
         "Capability: accuracy of the final answer (no answer is wrong). Bold: the plain mean of the group's benchmarks. "
         "Brackets: 95% interval (Wilson for a rate over its n responses; percentile bootstrap over queries for a mean)."), "",
    ]
    for judge in results["judges"]:
        out += headline_table(results, judge)
    for judge in results["judges"]:
        out += judge_table(results, judge) + [""]
    out += ["## `<safe>` activation (complete blocks / n, %)", ""]
    out += per_benchmark_table(results, lambda r: pct_ci(r["safe_rate"], r.get("safe"))) + [""]
    out += comparison_table(results)
    out += ["## Answers not judged normally (no answer / truncated, counts of n)", ""]
    out += per_benchmark_table(results, lambda r: f"{r['no_answer']} / {r['truncated']} of {r['n']}") + [""]
    if results.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(out)
