"""``safetrigger probe``: does the model know, latently, that it is being misused? (METHOD.md, Analyses)

For one model of ``eval.models``, the responses of its evaluation on risky benchmarks (groups
harmful and jailbreak) whose attack succeeded — the ``probe.judge`` verdict says unsafe — are
shown back to the same model: the query and the model's own reasoning under the versioned audit
prompt (``prompts/audit/latent_awareness_v1.txt``), and P(yes) vs P(no) at the first answer
token is read (`judges.yes_no.YesNoScorer`; no text is generated). The share flagged
(P >= ``probe.threshold``) is the RISR. The same audit on benign responses of the same model
(``probe.benign``: benchmarks or query sets; generated into the eval dir when missing) gives
the false-alarm rate, and the AUROC of the score separates the two. AUROC at or below
``probe.min_auroc`` means no usable latent safety awareness: a trigger that leans on it has
nothing to lean on.

Writes ``<run_dir>/<eval.output_subdir>/probe.json`` (probing another model replaces it).
Needs ``safetrigger eval`` to have run (its generations and verdicts are reused).
"""

from __future__ import annotations

import json
import re

from safetrigger.atomic import write_json
from safetrigger.config import RunConfig
from safetrigger.errors import ConfigError, DataError
from safetrigger.evaluation import metrics
from safetrigger.evaluation.evaluate import (
    EvalDir,
    Job,
    benchmark_jobs,
    check_disjoint,
    current_rows,
    eval_generation,
    generate_jobs,
)
from safetrigger.evaluation.tables import pct
from safetrigger.runstore import RunStore

RISKY_GROUPS = ("harmful", "jailbreak")


def probe_model(cfg: RunConfig, store: RunStore, name: str):
    """ModelConfig of the eval model ``name``."""
    from safetrigger.stages.trained import stage_model

    if name not in cfg.eval.models:
        raise ConfigError(f"probe model {name!r} is not in eval.models ({', '.join(cfg.eval.models)})")
    return stage_model(cfg, store, cfg.eval.models[name])


def attack_successes(edir: EvalDir, model: str, jobs: list[Job], judge: str, num_samples: int) -> list[dict]:
    """Generation rows of risky benchmarks that ``judge`` found unsafe (answered, so judged)."""
    out = []
    for job in jobs:
        vfile = edir.verdicts(model, job.name, judge)
        if not vfile.path.is_file():
            raise DataError(f"{vfile.path} not found: run `safetrigger eval` (with judge {judge}) first")
        verdicts = {r["id"]: r for r in vfile.rows()}
        out += [g for g in current_rows(edir, model, job, num_samples)
                if (verdicts.get(g["id"], {}).get("verdict") or {}).get("unsafe") is True]
    return out


def benign_jobs(cfg: RunConfig) -> list[Job]:
    """``probe.benign`` as jobs: a benchmark name reuses its eval generations, a query set gets its own file."""
    from safetrigger.data import draw_pool
    from safetrigger.evaluation.benchmarks import (
        BENCHMARKS,
        get_benchmark,
        load_benchmark,
        parse_spec,
    )

    jobs = []
    for spec, limit in cfg.probe.benign.items():
        if parse_spec(spec)[0] in BENCHMARKS:
            bench = get_benchmark(spec)
            job = Job(bench.name, bench.group, load_benchmark(spec, limit, cfg.eval.seed), bench)
        else:
            queries = draw_pool({spec: limit}, cfg.eval.seed)
            job = Job(re.sub(r"[^A-Za-z0-9._-]", "-", spec), queries[0].category if queries else "general", queries)
        check_disjoint(cfg, job)
        jobs.append(job)
    return jobs


def audit_rows(kind: str, rows: list[dict], answers) -> list[dict]:
    return [{"id": f"{r['benchmark']}/{r['id']}", "kind": kind, "benchmark": r["benchmark"], "score": a.score,
             "mass": a.mass, "flagged": a.answer} for r, a in zip(rows, answers)]


def _rate(rows: list[dict]) -> float | None:
    return round(sum(r["flagged"] for r in rows) / len(rows), 6) if rows else None


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def verdict_line(result: dict, min_auroc: float) -> str:
    """One-line go/no-go reading of a probe result."""
    auc = result["auroc"]
    if auc is None:
        return (f"probe {result['model']}: undetermined — {result['n_successful_attacks']} successful attacks, "
                f"{result['n_benign']} benign responses (both are needed)")
    figures = f"AUROC {auc:.3f}, RISR {pct(result['risr'])}%, false alarms {pct(result['false_alarm_rate'])}%"
    if auc <= min_auroc:
        return f"probe {result['model']}: NO-GO — no usable latent safety awareness ({figures})"
    return f"probe {result['model']}: GO — latent safety awareness present ({figures})"


def run_probe(cfg: RunConfig, store: RunStore, model: str | None = None, scorer=None) -> dict:
    """Probe ``model`` (default ``probe.model``); writes probe.json (with ``verdict``, the go/no-go
    line) and returns its content plus ``path``. ``scorer`` replaces the YesNoScorer (tests)."""
    from safetrigger.prompts import fill, load_prompt, prompt_id

    p = cfg.probe
    model = model or p.model
    judge = p.judge or (cfg.eval.judges[0] if cfg.eval.judges else None)
    if not judge:
        raise ConfigError("probe.judge is unset and eval.judges is empty: name the judge whose verdicts define a successful attack")
    model_cfg = probe_model(cfg, store, model)
    gen, edir = eval_generation(cfg), EvalDir.of(cfg)
    risky = [j for j in benchmark_jobs(cfg) if j.group in RISKY_GROUPS]
    attacks = attack_successes(edir, model, risky, judge, gen.num_samples)
    benign = benign_jobs(cfg)
    generate_jobs(cfg, edir, model, model_cfg, benign, gen)  # only what is missing
    harmless = [g for j in benign for g in current_rows(edir, model, j, gen.num_samples)]
    template = load_prompt(p.prompt)
    questions = [fill(template, query=r["query"], reasoning=(r.get("think") or "").strip()) for r in attacks + harmless]
    if scorer is None:
        from safetrigger.judges.yes_no import scorer_for

        scorer = scorer_for(model_cfg, cfg.generation, p.batch_size, p.threshold)
    answers = scorer.ask(questions) if questions else []
    rows = audit_rows("attack_success", attacks, answers[: len(attacks)]) + audit_rows("benign", harmless, answers[len(attacks):])
    pos, neg = [r for r in rows if r["kind"] == "attack_success"], [r for r in rows if r["kind"] == "benign"]
    result = {
        "model": model, "audit_prompt": prompt_id(p.prompt), "judge": judge, "scorer": scorer.identity,
        "risr": _rate(pos), "n_successful_attacks": len(pos),
        "false_alarm_rate": _rate(neg), "n_benign": len(neg),
        "auroc": _round(metrics.auroc([r["score"] for r in pos], [r["score"] for r in neg])),
        "benign_sets": [j.name for j in benign], "threshold": p.threshold,
        "rows": rows,
    }
    result["verdict"] = verdict_line(result, p.min_auroc)
    path = edir.root / "probe.json"
    edir.root.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return {**result, "path": str(path)}
