"""``safetrigger compare RUN_DIR... [--out DIR]``: the evaluated models of several run dirs
(base, ST-S, ST-D of the demo, and the baselines of configs/baselines/) in one table.

Each run dir must hold a finished ``safetrigger eval`` (its ``<eval dir>/results.json``, the
generations and verdicts). The runs are compared only when they were evaluated alike: the same
benchmarks with the same prompt ids, the same judges (identities) and the same generation
settings and answer policy (``results.json`` ``generation`` / ``policy``); otherwise the command
refuses and names every difference. A baseline's own method (a system prompt, the self-audit)
is not a generation setting: it is what is being compared.

Rows are named ``<run>/<model>`` (run = the run dir's name). Statistics are recomputed from the
files, as ``safetrigger eval`` does (`evaluation.metrics`, `statistics`): every rate with its n
and Wilson interval, category means with bootstrap intervals, and exact McNemar tests on the
same prompt ids of every model against the base model and against ST-D. The base model is the
first model of spec ``base`` in a run with no inference-time method; ST-D the first of spec
``dpo``. Cost: mean generated tokens per response, reasoning included, over all passes.

Writes ``results.json`` / ``results.csv`` / ``results.md`` (the comparison table first, then
the eval tables) and ``report.html`` to ``--out`` (default ``<parent of the first run>/compare``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetrigger import timestamps
from safetrigger.errors import ConfigError, DataError

COMPARE_TITLE = "Method comparison"


@dataclass
class RunEval:
    """One run dir's evaluation, as ``compare`` reads it."""

    path: Path
    name: str
    cfg: object
    edir: object
    results: dict
    jobs: list

    def method(self, spec: str) -> str:
        """What a model of this run stands for: its inference-time method, else its spec."""
        e = self.cfg.eval
        if e.self_audit:
            return "self-audit"
        if e.system_prompt:
            return f"system prompt ({e.system_prompt})"
        if spec == "sft":
            return sft_method(self.cfg)
        return {"base": "base", "dpo": "DPO (ST-D)"}.get(spec, spec)

    def plain(self) -> bool:
        return not (self.cfg.eval.self_audit or self.cfg.eval.system_prompt)


def sft_method(cfg) -> str:
    """The SFT variant a run's config trains (how build-sft assembled its risky targets)."""
    s = cfg.sft_data
    if s.risky_source == "generate":
        what = f"SFT on pass ①, primer {cfg.primer.text!r}" if cfg.primer.text else "SFT on pass ①"
    else:
        what = {"block": "SFT (ST-S)", "in_think": "SFT, analysis in `<think>`", "none": "SFT, no `<safe>` block"}[s.safe_placement]
        if s.think_source == "think_2":
            what += ", think_2"
    return what + (" + STAR-1" if s.star1 else "")


def _eval_dir(run: Path) -> Path:
    from safetrigger.report.collect import _eval_subdir, read_json

    manifest, _ = read_json(run / "manifest.json")
    return run / _eval_subdir(manifest if isinstance(manifest, dict) else {})


def load_run(path: str | Path, name: str) -> RunEval:
    from safetrigger.config import RunConfig, _build
    from safetrigger.evaluation.evaluate import EvalDir, benchmark_jobs
    from safetrigger.report.collect import read_json

    run = Path(path)
    if not run.is_dir():
        raise DataError(f"{run} is not a run dir (pass run dirs written by `safetrigger run`)")
    root = _eval_dir(run)
    results, err = read_json(root / "results.json")
    if not isinstance(results, dict):
        raise DataError(f"{root / 'results.json'} is {err or 'not a JSON object'}: run `safetrigger eval` on {run} first")
    manifest, err = read_json(root / "manifest.json")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise DataError(f"{root / 'manifest.json'} is {err or 'without a config'}: re-run `safetrigger eval` on {run}")
    try:
        cfg = _build(RunConfig, manifest["config"])
    except ConfigError as e:
        raise DataError(f"{root / 'manifest.json'}: its config does not load with this version ({e})") from None
    edir = EvalDir(root)
    return RunEval(run, name, cfg, edir, results, benchmark_jobs(cfg))


def run_names(paths: list[str]) -> list[str]:
    """The run dirs' names, their paths where two names collide."""
    names = [Path(p).resolve().name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]


# ---------------------------------------------------------------------------- compatibility


def _dict_diff(what: str, items: list[tuple[str, dict]]) -> list[str]:
    first_name, first = items[0]
    out = []
    for name, d in items[1:]:
        keys = sorted(k for k in set(first) | set(d) if first.get(k) != d.get(k))
        if keys:
            out.append(f"{what} differ between {first_name} and {name}: " +
                       "; ".join(f"{k}: {json.dumps(first.get(k))} vs {json.dumps(d.get(k))}" for k in keys))
    return out


def differences(runs: list[RunEval]) -> list[str]:
    """Everything that makes the runs' evaluations incomparable (empty when they compare)."""
    out = []
    ref = runs[0]
    ref_ids = {j.name: j.ids(ref.cfg.eval.num_samples) for j in ref.jobs}
    for r in runs[1:]:
        ids = {j.name: j.ids(r.cfg.eval.num_samples) for j in r.jobs}
        if set(ids) != set(ref_ids):
            out.append(f"eval benchmarks differ: {ref.name} has {', '.join(sorted(ref_ids))}; "
                       f"{r.name} has {', '.join(sorted(ids))}")
        for b in sorted(set(ids) & set(ref_ids)):
            if ids[b] != ref_ids[b]:
                out.append(f"eval prompts of {b} differ: {len(ref_ids[b] - ids[b])} ids only in {ref.name}, "
                           f"{len(ids[b] - ref_ids[b])} only in {r.name} (same eval.benchmarks, eval.seed, "
                           f"eval.num_samples and data.max_query_chars are needed)")
    out += _dict_diff("judges", [(r.name, r.results.get("judges") or {}) for r in runs])
    out += _dict_diff("generation settings", [(r.name, r.results.get("generation") or {}) for r in runs])
    out += _dict_diff("answer policies", [(r.name, r.results.get("policy") or {}) for r in runs])
    return out


# ---------------------------------------------------------------------------- results


def compare_pairs(models: dict[str, dict]) -> tuple[list[tuple[str, str]], str | None, str | None]:
    """(model, reference) pairs: every model against the base model and against ST-D."""
    base = next((m for m, i in models.items() if i["spec"] == "base" and i["plain"]), None)
    std = next((m for m, i in models.items() if i["spec"] == "dpo"), None)
    pairs = [(m, base) for m in models if base and m != base]
    pairs += [(m, std) for m in models if std and m not in (std, base)]
    return pairs, base, std


def build_comparison(runs: list[RunEval]) -> dict:
    """The combined results dict (results.json's schema plus ``compare``)."""
    from safetrigger.evaluation import metrics
    from safetrigger.evaluation.comparisons import compare
    from safetrigger.evaluation.evaluate import judge_pairs, result_rows, statistics_settings

    notes: list[str] = []
    ref = runs[0]
    judges = dict(ref.results.get("judges") or {})
    models, rows, outcomes, per_query = {}, [], {}, {}
    for r in runs:
        specs = {m: (i or {}).get("spec") for m, i in (r.results.get("models") or {}).items()}
        pairs = judge_pairs(r.jobs, {j: None for j in judges}, [])
        rr, out, pq = result_rows(r.edir, list(specs), pairs, r.cfg.eval.num_samples)
        name = {m: f"{r.name}/{m}" for m in specs}
        for m, spec in specs.items():
            models[name[m]] = {"spec": spec, "run": str(r.path), "run_name": r.name, "model": m,
                               "method": r.method(spec), "plain": r.plain(),
                               "identity": (r.results["models"][m] or {}).get("identity")}
        rows += [{**row, "model": name[row["model"]]} for row in rr]
        outcomes.update({(name[k[0]], *k[1:]): v for k, v in out.items()})
        per_query.update({(name[k[0]], *k[1:]): v for k, v in pq.items()})
        notes += [f"{r.name}: {n}" for n in r.results.get("notes") or []]
    pairs, base, std = compare_pairs(models)
    if base is None:
        notes.append("no base model (spec base, no system prompt or self-audit) among the runs: no tests against base")
    if std is None:
        notes.append("no ST-D model (spec dpo) among the runs: no tests against ST-D")
    for m in models:
        models[m]["tokens_per_response"] = tokens_per_response(rows, m)
    return {
        "created": timestamps.now(),
        "run_dir": ", ".join(str(r.path) for r in runs),
        "runs": [{"name": r.name, "path": str(r.path)} for r in runs],
        "models": models,
        "benchmarks": ref.results.get("benchmarks") or {},
        "judges": judges,
        "generation": ref.results.get("generation") or {},
        "policy": ref.results.get("policy") or {},
        "statistics": statistics_settings(),
        "rows": rows,
        "category_means": metrics.category_means(rows, list(judges)),
        "category_means_ci": metrics.category_means_ci(per_query, list(models), list(judges)),
        "comparisons": compare(outcomes, pairs, notes),
        "compare": {"base": base, "st_d": std},
        "notes": notes,
    }


def tokens_per_response(rows: list[dict], model: str) -> dict:
    """Mean generated tokens per response of ``model`` over all benchmarks (weighted by n)."""
    first: dict = {}
    for r in rows:
        if r["model"] == model:
            first.setdefault(r["benchmark"], r)
    vals = [(r.get("mean_generated_tokens"), r["n"]) for r in first.values() if r.get("mean_generated_tokens") is not None]
    n = sum(w for _, w in vals)
    return {"mean": round(sum(v * w for v, w in vals) / n, 1) if n else None, "n": n}


# ---------------------------------------------------------------------------- table

COLUMNS = [("ASR harmful", "harmful"), ("ASR jailbreak", "jailbreak"), ("over-refusal", "overrefusal"),
           ("general refusal", "general")]
# Judge-free facts of the harmful benchmark's responses, beside the rates: a lower ASR that
# comes from responses without an answer (the budget spent in reasoning or the block) is
# silence, not a safer answer, and the complete-block share is whether the trigger fired.
RESPONSE_COLUMNS = [("no answer", "no_answer"), ("complete safe block", "safe")]


def compare_view(results: dict, judge: str) -> dict:
    """The comparison table under one judge: per model and column the rate with its interval
    and the p-values against base and ST-D (exact McNemar, same prompts)."""
    from safetrigger.evaluation.tables import pct_ci
    from safetrigger.statistics import ALPHA, format_p, rate

    rows = results["rows"]
    alpha = results.get("statistics", {}).get("alpha", ALPHA)
    tests = {(t["model"], t["reference"], t["benchmark"], t["judge"], t["metric"]): t
             for t in (results.get("comparisons") or {}).get("tests", [])}
    refs = results.get("compare") or {}
    cols = [(title, next((r["benchmark"] for r in rows if r["group"] == g), None)) for title, g in COLUMNS]
    cols = [(t, b) for t, b in cols if b]
    harmful = next((r["benchmark"] for r in rows if r["group"] == "harmful"), None)
    lines = []
    for model, info in results["models"].items():
        cells = []
        for _, bench in cols:
            row = next((r for r in rows if r["model"] == model and r["benchmark"] == bench and r["judge"] == judge), None)
            if row is None:
                cells.append({"text": "–", "p_base": None, "p_std": None})
                continue
            ps = {}
            for key, ref in (("p_base", refs.get("base")), ("p_std", refs.get("st_d"))):
                t = tests.get((model, ref, bench, judge, row["metric"]))
                ps[key] = None if t is None else t["p"]
            cells.append({"text": f"{pct_ci(row['value'], row.get('rate'))} n={row['n']}",
                          "p_text": f"p={format_p(ps['p_base'], alpha)} / {format_p(ps['p_std'], alpha)}", **ps})
        harm = next((r for r in rows if r["model"] == model and r["benchmark"] == harmful and r["judge"] == judge), None)
        for _, key in RESPONSE_COLUMNS if harmful else []:
            if harm is None:
                cells.append({"text": "–", "p_text": None, "p_base": None, "p_std": None})
                continue
            stat = harm.get("safe") if key == "safe" else rate(int(harm.get("no_answer") or 0), harm["n"])
            cells.append({"text": f"{pct_ci(stat['value'], stat)} n={stat['n']}", "p_text": None, "p_base": None, "p_std": None})
        tok = info.get("tokens_per_response") or {}
        lines.append({"model": model, "method": info.get("method"), "cells": cells,
                      "tokens": "–" if tok.get("mean") is None else f"{tok['mean']:.1f}"})
    extra = [f"{t} ({harmful})" for t, _ in RESPONSE_COLUMNS] if harmful else []
    return {"judge": judge, "columns": [f"{t} ({b})" for t, b in cols] + extra, "rows": lines}


def compare_markdown(results: dict) -> list[str]:
    from safetrigger.evaluation.tables import _table

    refs = results.get("compare") or {}
    out = [f"# {COMPARE_TITLE}", "",
           f"Runs: {', '.join(r['name'] for r in results['runs'])}. Same prompts, judges and generation settings "
           f"(checked). Values in % [95% Wilson interval], n responses; p: exact McNemar on the same prompt ids against "
           f"base ({refs.get('base') or 'none'}) / against ST-D ({refs.get('st_d') or 'none'}); "
           f"tokens: mean generated tokens per response, reasoning included, summed over all passes.", ""]
    for judge in results["judges"]:
        v = compare_view(results, judge)
        lines = [[r["model"], r["method"] or "–"] + [f"{c['text']}" + (f", {c['p_text']}" if c.get("p_text") else "")
                                                      for c in r["cells"]] + [r["tokens"]] for r in v["rows"]]
        out += [f"## {judge}", ""] + _table(["model", "method"] + v["columns"] + ["tokens / response"], lines, left=2) + [""]
    return out


def write_comparison(out_dir: Path, results: dict) -> dict[str, Path]:
    from safetrigger.evaluation.tables import to_markdown, write_results
    from safetrigger.jsonl import atomic_write

    paths = write_results(out_dir, results)
    md = "\n".join(compare_markdown(results)) + "\n" + to_markdown(results)
    with atomic_write(paths["md"]) as f:
        f.write(md)
    paths["html"] = out_dir / "report.html"
    with atomic_write(paths["html"]) as f:
        f.write(render_compare_page(results))
    return paths


def render_compare_page(results: dict) -> str:
    """One self-contained page: the comparison table, the eval tables, paired tests, plots."""
    import jinja2

    from safetrigger.report.html import HERE, PLOTS, _md
    from safetrigger.report.plots import make_plots
    from safetrigger.report.results import results_view

    problems: list[str] = []
    view = results_view(results, problems)
    plots = make_plots({"eval": {"view": view}})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(md=_md)
    return env.get_template("compare.html.j2").render(
        r=results, v=view, problems=problems, tables=[compare_view(results, j) for j in results["judges"]],
        plots=plots, plot_list=[p for p in PLOTS if p[0] != "reward"],
        css=(HERE / "static" / "report.css").read_text(encoding="utf-8"),
    )


def run_compare(run_dirs: list[str], out: str | None = None) -> dict:
    """Compare the runs (refusing incomparable ones); returns the paths written."""
    if len(run_dirs) < 1:
        raise ConfigError("compare needs at least one run dir")
    resolved = [Path(p).resolve() for p in run_dirs]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("compare: a run dir is named twice; name each run dir once")
    runs = [load_run(p, n) for p, n in zip(run_dirs, run_names(run_dirs))]
    diff = differences(runs)
    if diff:
        raise DataError("cannot compare these runs, their evaluations differ:\n  - " + "\n  - ".join(diff))
    results = build_comparison(runs)
    out_dir = Path(out) if out else Path(run_dirs[0]).resolve().parent / "compare"
    paths = write_comparison(out_dir, results)
    return {k: str(v) for k, v in paths.items()}
