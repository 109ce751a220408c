"""A small, complete run dir for the report tests: every stage's stats file, a manifest and an
``eval/`` folder following the eval schema (2 models × 2 benchmarks × 2 judges, 4 generations
per model × benchmark). Values are derived from the verdict files, as ``safetrigger eval`` would."""

from __future__ import annotations

import json
from pathlib import Path

from safetrigger.evaluation.comparisons import SAFE_METRIC, compare, comparison_pairs
from safetrigger.statistics import ALPHA, category_mean, rate

MODELS = {"base": "base", "st-d": "dpo"}
BENCHMARKS = {"advbench": ("harmful", "asr"), "xstest": ("overrefusal", "overrefusal")}
CAPABILITY = {"gsm8k": ("capability", "accuracy")}
JUDGES = {"refusal-minilm": "refusal-minilm@v1(test)", "llm-rubric": "llm-rubric@v1(test)"}
N = 4  # generations per (model, benchmark)
HOSTILE = "</script><script>window.PWNED=1</script><!-- & </safe> ends here"


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


STATS = {
    "generate": {"rows": 30, "per_category": {"general": {"rows": 10, "budget_hit": 9, "has_safe": 0},
                                              "harmful": {"rows": 20, "budget_hit": 18, "has_safe": 0}},
                 "issues": {}, "think_tokens": {"p50": 64, "p90": 64, "p100": 64}, "answer_tokens": {"p50": 96, "p90": 96, "p100": 96}},
    "trigger": {"rows": 20, "accepted": 18, "attempts_total": 25, "failure_reasons": {"judge_unsafe": 4, "safe_budget": 3},
                "per_category": {"harmful": {"rows": 20, "accepted": 18}}, "judge": {"unsafe_rate": 0.1}},
    "build_sft": {"rows": 27, "generated": 30, "kept": 27, "dropped": 3,
                  "accounting": {"general": {"generated": 10, "kept": 9, "dropped": 1, "ok": True},
                                 "harmful": {"generated": 20, "kept": 18, "dropped": 2, "ok": True}},
                  "accounting_ok": True,
                  "dropped_reasons": {"general": {"empty_answer": 1}, "harmful": {"trigger_rejected": 2}},
                  "dropped_reasons_total": {"trigger_rejected": 2, "empty_answer": 1}},
    "sft": {"examples": 27, "examples_in_file": 27, "dropped_overlong": 0, "train_loss": 3.37, "steps": 14, "runtime_s": 581.5},
    "activation": {"rows": 24, "per_category": {"general": {"rows": 12, "has_safe": 1}, "harmful": {"rows": 12, "has_safe": 9}},
                   "safe_rate": {"general": 0.0833, "harmful": 0.75}},
    "sample": {"rows": 40, "per_category": {"jailbreak": {"rows": 40, "has_safe": 22}}},
    "score": {"rows": 40, "flag_rates": {"F_safe": 0.6, "S_exist": 0.55, "T_full": 0.5, "S_full": 0.4},
              "policy_counts": {"no_block": 18}, "judge_labels": {"refusal": 24, "compliance": 16}},
    "build_dpo": {"queries": 10, "rows": 7, "kept": 7, "dropped": 3, "dropped_reasons": {"gap_below_delta": 2, "single_response": 1},
                  "reward_histogram": {"0": 9, "1": 6, "2": 11, "3": 7, "4": 7}, "flag_rates": {"F_safe": 0.6}},
    "dpo": {"examples": 7, "train_loss": 0.69, "steps": 4, "rows": 7},
}


def _row(model: str, bench: str, group: str, i: int) -> dict:
    safe = model == "st-d" and i % 2 == 0  # ST-D writes a block on half its answers
    answer = "" if i == 3 else (HOSTILE if i == 0 and model == "base" else f"answer {model} {bench} {i}")
    return {
        "id": f"{bench}-{i}:0", "query_id": f"{bench}-{i}", "benchmark": bench, "group": group,
        "category": group, "source": bench, "query": f"query {i} of {bench}",
        "response": "...", "think": f"thinking {model} {bench} {i}", "safe": f"safety analysis {i}" if safe else None,
        "answer": answer, "has_safe": safe, "issues": [] if answer else ["empty_answer"],
        "think_finish": "stop", "answer_finish": "eos", "budget_hit": False,
        "think_tokens": 40 + i, "safe_tokens": 30 if safe else 0, "answer_tokens": 20 + i, "first_answer_entropy": None,
    }


def _verdict(model: str, judge: str, row: dict, i: int) -> dict:
    if not row["answer"]:
        return {"id": row["id"], "judge": judge, "verdict": None, "policy": "no_answer", "correct": None}
    if row["group"] == "capability":
        return {"id": row["id"], "judge": None, "verdict": None, "policy": "judged", "correct": i % 2 == 0}
    # base complies more often than st-d; the rubric judge is stricter than the refusal judge
    unsafe = (i < 2 if model == "base" else i < 1) if judge == "refusal-minilm" else (i < 3 if model == "base" else i < 1)
    return {"id": row["id"], "judge": judge, "policy": "judged", "correct": None,
            "verdict": {"unsafe": unsafe, "label": "compliance" if unsafe else "refusal", "score": 0.9 if unsafe else 0.1,
                        "raw": "{}", "judge": JUDGES[judge]}}


def build_run(root: Path, *, stages=tuple(STATS), eval_dir: bool = True, capability: bool = False) -> Path:
    """Write a run dir under ``root`` and return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in stages:
        _dump(root / f"{name}.stats.json", STATS[name])
    _dump(root / "manifest.json", {
        "created": "2026-01-01T00:00:00+0000", "config": {"model": {"name_or_path": "embedded"}, "stages": list(STATS)},
        "versions": {"safetrigger": "0.1.0"}, "git": "abc1234",
        "stages": {n: {"status": "done", "started": "2026-01-01T00:00:00+0000", "finished": "2026-01-01T00:01:30+0000",
                       "rows": STATS[n].get("rows")} for n in stages},
    })
    if eval_dir:
        _build_eval(root / "eval", capability)
    return root


def _build_eval(ev: Path, capability: bool) -> None:
    benches = {**BENCHMARKS, **(CAPABILITY if capability else {})}
    rows_out, outcomes = [], {}
    for model in MODELS:
        for bench, (group, metric) in benches.items():
            gens = [_row(model, bench, group, i) for i in range(N)]
            _jsonl(ev / "generations" / model / f"{bench}.jsonl", gens)
            judges = [None] if metric == "accuracy" else list(JUDGES)
            for judge in judges:
                vs = [_verdict(model, judge, r, i) for i, r in enumerate(gens)]
                if judge is not None:
                    _jsonl(ev / "verdicts" / model / f"{bench}.{judge}.jsonl", vs)
                else:
                    _jsonl(ev / "verdicts" / model / f"{bench}.accuracy.jsonl", vs)
                if metric == "accuracy":
                    outs = [bool(v["correct"]) for v in vs]
                elif metric == "asr":
                    outs = [bool(v["verdict"] and v["verdict"]["unsafe"]) for v in vs]
                else:  # over-refusal: refusals among answered prompts
                    outs = [bool(v["verdict"] and not v["verdict"]["unsafe"]) for v in vs]
                count = sum(outs)
                outcomes[(model, bench, judge, metric)] = {r["id"]: o for r, o in zip(gens, outs)}
                outcomes[(model, bench, None, SAFE_METRIC)] = {r["id"]: r["has_safe"] for r in gens}
                safe = sum(r["has_safe"] for r in gens)
                rows_out.append({
                    "model": model, "benchmark": bench, "group": group, "metric": metric, "judge": judge,
                    "value": count / N, "n": N, "count": count, "rate": rate(count, N), "undecided": 0,
                    "no_answer": sum(v["policy"] == "no_answer" for v in vs), "truncated": 0,
                    "safe_rate": safe / N, "safe": rate(safe, N),
                    "mean_tokens": {p: sum(r[f"{p}_tokens"] for r in gens) / N for p in ("think", "safe", "answer")},
                    "first_answer_entropy": None,
                })
    means, cis = {}, {}
    for model in MODELS:
        # one benchmark per group here, so a group's mean is that benchmark's value
        means[model] = {j: {r["group"]: r["value"] for r in rows_out if r["model"] == model and r["judge"] == j} for j in JUDGES}
        mine = [k for k in outcomes if k[0] == model]
        cis[model] = {j: {benches[b][0]: category_mean([list(outcomes[k].values())]) for k in mine if k[2] == j for b in [k[1]]}
                      for j in JUDGES}
        for j in JUDGES:
            cis[model][j]["risky"] = cis[model][j]["harmful"]
        if capability:
            means[model]["capability"] = next(r["value"] for r in rows_out if r["model"] == model and r["metric"] == "accuracy")
            cis[model]["capability"] = category_mean([list(outcomes[(model, "gsm8k", None, "accuracy")].values())])
    _dump(ev / "results.json", {
        "created": "2026-01-02T00:00:00+0000", "run_dir": str(ev.parent),
        "models": {m: {"spec": s, "identity": {}} for m, s in MODELS.items()},
        "benchmarks": {b: {"group": g, "metric": m, "n": N} for b, (g, m) in benches.items()},
        "judges": dict(JUDGES), "generation": {"temperature": 0.0}, "rows": rows_out,
        "category_means": means, "category_means_ci": cis, "statistics": {"alpha": ALPHA},
        "comparisons": compare(outcomes, comparison_pairs(MODELS), []), "wall_s": 12.5,
    })
