"""Paired model comparisons of one evaluation: exact McNemar tests on the same prompts.

Pairs: every model against the reference (the model whose spec is ``base``, else the one named
``base``), and ST-D (spec ``dpo``) against ST-S (spec ``sft``). Per benchmark and judge, each
test compares the outcomes the result rows count (`metrics.outcomes`: attack success, refusal,
correct answer) plus, once per benchmark (judge None), the complete-``<safe>``-block outcome.
Rows are paired by their stable id (``<query id>:<sample>``); when two models do not hold the
same ids the test is skipped and said in a note, never paired by position.
"""

from __future__ import annotations

from safetrigger.statistics import IdMismatch, mcnemar_by_id, rate

SAFE_METRIC = "safe_rate"
"""Metric name of the complete-<safe>-block comparison (judge-independent: judge None)."""


def comparison_pairs(specs: dict[str, str]) -> list[tuple[str, str]]:
    """``(model, reference)`` pairs from ``{model name: spec}``, in model order."""
    ref = next((m for m, s in specs.items() if s == "base"), "base" if "base" in specs else None)
    pairs = [(m, ref) for m in specs if ref is not None and m != ref]
    for d in (m for m, s in specs.items() if s == "dpo"):
        pairs += [(d, s) for s, spec in specs.items() if spec == "sft" and (d, s) not in pairs]
    return pairs


def compare(outcomes: dict[tuple, dict[str, bool]], pairs: list[tuple[str, str]], notes: list[str]) -> dict:
    """``{"pairs", "tests", "skipped"}`` from ``outcomes``: (model, benchmark, judge, metric) ->
    {row id: outcome}. Each test: model, reference, benchmark, judge, metric, both rates (with
    n and Wilson interval), ``b01`` (reference false, model true), ``b10`` (the reverse),
    ``n_pairs``, ``p`` and ``significant``. A skipped test adds a note."""
    tests, skipped = [], 0
    benches = list(dict.fromkeys(k[1] for k in outcomes))
    # per benchmark: the judges' tests in their order, then the judge-independent <safe> one
    keys = sorted(outcomes, key=lambda k: (benches.index(k[1]), k[3] == SAFE_METRIC))
    for model, ref in pairs:
        for m, bench, judge, metric in keys:
            if m != ref or (model, bench, judge, metric) not in outcomes:
                continue
            ref_out, out = outcomes[(m, bench, judge, metric)], outcomes[(model, bench, judge, metric)]
            try:
                test = mcnemar_by_id(ref_out, out)
            except IdMismatch as e:
                skipped += 1
                notes.append(f"comparison {model} vs {ref} on {bench} / {judge or metric} skipped: prompt ids differ "
                             f"({len(e.only_b)} only in {model}, {len(e.only_a)} only in {ref})")
                continue
            tests.append({"model": model, "reference": ref, "benchmark": bench, "judge": judge, "metric": metric,
                          "model_rate": rate(sum(out.values()), len(out)),
                          "reference_rate": rate(sum(ref_out.values()), len(ref_out)), **test})
    return {"pairs": [list(p) for p in pairs], "tests": tests, "skipped": skipped}
