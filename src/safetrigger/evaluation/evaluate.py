"""``safetrigger eval``: every model x benchmark -> responses -> every judge -> results tables.

Layout under ``<run_dir>/<eval.output_subdir>/`` (the contract with ``safetrigger report``)::

    manifest.json                               per-model generation settings and loaded model
    raw/<model>.jsonl                           responses as generated (the resume point)
    generations/<model>/<benchmark>.jsonl       one row per (query, sample) + token counts + entropy
    verdicts/<model>/<benchmark>.<judge>.jsonl  one row per generation row ("scorer" for accuracy)
    results.json, results.csv, results.md       see `evaluation.tables`; intervals and paired
                                                tests from `safetrigger.statistics`

Steps, each resumable (finished ids are skipped, nothing is written twice): (1) every benchmark
is checked disjoint from the run's training pools (``data.pool`` and ``sample.pool``) — an
overlap is refused before anything is generated; (2) per model, the missing responses are
generated with the project's two-phase reasoning (``stages.generate.generate_rows``; settings
fingerprinted in the eval manifest, so a change is refused rather than mixed in); (3) each
row gets token counts and its first-answer-token entropy (`evaluation.entropy`); (4) every
judge judges every row — **the final answer only**, never ``<think>`` nor ``<safe>`` — and
accuracy benchmarks are scored by their own scorer; judges are never merged, each gets its own
rows; (5) the tables are rebuilt from the files: every rate with its n and 95% Wilson interval,
category means with bootstrap intervals, and each model compared with ``base`` (ST-D also with
ST-S) by exact McNemar tests on the same prompts (`evaluation.comparisons`).

Inference-time baselines (configs/baselines/): ``eval.system_prompt`` adds a versioned prompt to
every model's system prompt; ``eval.self_audit`` audits each response and regenerates the flagged
ones with the analysis (`evaluation.self_audit`). Every generations row carries
``generated_tokens`` (reasoning included, summed over all passes): the cost ``safetrigger
compare`` reports.

Answer policy (``no_answer`` / ``truncated_judged``) and metric definitions: `evaluation.metrics`.
A model whose training stage has not run (``sft``/``dpo``) is skipped with a recorded note,
unless it is the only model.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetrigger import timestamps
from safetrigger.config import ModelConfig, RunConfig
from safetrigger.errors import ConfigError, SafeTriggerError
from safetrigger.evaluation import metrics
from safetrigger.runstore import RunStore, StageFile

log = logging.getLogger(__name__)
STAGE = "eval"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Job:
    """Queries generated and stored under one name: a benchmark, or a probe's query set."""

    name: str
    group: str
    queries: list
    bench: object = None
    """The Benchmark, None for a plain query set."""

    def ids(self, num_samples: int) -> set[str]:
        return {f"{q.id}:{s}" for q in self.queries for s in range(num_samples)}


@dataclass
class EvalDir:
    """Paths of one evaluation under the run dir."""

    root: Path
    store: RunStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = RunStore(self.root)

    @classmethod
    def of(cls, cfg: RunConfig) -> EvalDir:
        return cls(Path(cfg.run_dir) / cfg.eval.output_subdir)

    def generations(self, model: str, job: str) -> StageFile:
        return StageFile(self.root / "generations" / model / f"{job}.jsonl")

    def verdicts(self, model: str, job: str, judge: str) -> StageFile:
        return StageFile(self.root / "verdicts" / model / f"{job}.{judge}.jsonl")


# ---------------------------------------------------------------------------- setup


def eval_generation(cfg: RunConfig):
    """``generation`` with evaluation's sampling (greedy by default) and budgets."""
    e = cfg.eval
    if e.num_samples < 1 or e.temperature < 0:
        raise ConfigError(f"eval.num_samples must be >= 1 and eval.temperature >= 0, got {e.num_samples} and {e.temperature}")
    over = {"num_samples": e.num_samples, "temperature": e.temperature, "seed": e.seed,
            "thinking_budget": e.thinking_budget, "max_new_tokens": e.max_new_tokens}
    return dataclasses.replace(cfg.generation, **{k: v for k, v in over.items() if v is not None})


def check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{kind} name {name!r} is used in file names: letters, digits, '.', '_' and '-' only")
    return name


def resolve_models(cfg: RunConfig, store: RunStore, notes: list[str]) -> dict[str, tuple[str, ModelConfig]]:
    """``name -> (spec, ModelConfig)``; models whose training stage has not run are skipped (noted)."""
    from safetrigger.stages.trained import stage_model

    if not cfg.eval.models:
        raise ConfigError("eval.models is empty: name at least one model (e.g. {base: base})")
    out = {}
    for name, spec in cfg.eval.models.items():
        check_name("model", name)
        try:
            out[name] = (spec, stage_model(cfg, store, spec))
        except SafeTriggerError as e:  # e.g. "no trained model in runs/x/dpo: run the 'dpo' stage first"
            if len(cfg.eval.models) == 1:
                raise
            notes.append(f"model {name} ({spec}) skipped: {e}")
            log.warning("eval: %s", notes[-1])
    if not out:
        raise SafeTriggerError("no model to evaluate: " + "; ".join(notes))
    return out


def check_disjoint(cfg: RunConfig, job: Job) -> None:
    """Refuse a benchmark that shares a query, prompt or template with the training pools."""
    from safetrigger.data import assert_disjoint
    from safetrigger.stages.trained import training_pools

    assert_disjoint(training_pools(cfg), job.queries, what=f"the run's training pools (data.pool, sample.pool) and {job.name!r}")


def benchmark_jobs(cfg: RunConfig) -> list[Job]:
    """The configured benchmarks' queries, each checked disjoint from the training pools."""
    from safetrigger.evaluation.benchmarks import get_benchmark, load_benchmark

    if not cfg.eval.benchmarks:
        raise ConfigError("eval.benchmarks is empty: name at least one benchmark (e.g. {advbench: 50})")
    jobs: dict[str, Job] = {}
    for spec, limit in cfg.eval.benchmarks.items():
        bench = get_benchmark(spec)
        if bench.name in jobs:
            raise ConfigError(f"eval.benchmarks names {bench.name!r} twice; its files are per name, keep one")
        job = Job(bench.name, bench.group, load_benchmark(spec, limit, cfg.eval.seed, max_chars=cfg.data.max_query_chars), bench)
        check_disjoint(cfg, job)
        jobs[bench.name] = job
    return list(jobs.values())


# ---------------------------------------------------------------------------- generation


def generate_jobs(cfg: RunConfig, edir: EvalDir, model: str, model_cfg: ModelConfig, jobs: list[Job], gen) -> None:
    """Generate the missing responses of ``model`` for ``jobs`` (one model load for all of them),
    then write each job's rows, with token counts and entropy, to its generations file."""
    from safetrigger.generation import output_settings
    from safetrigger.stages.generate import generate_rows

    stage = f"raw/{model}"
    settings = {"model": dataclasses.asdict(model_cfg), "generation": output_settings(gen)}
    if cfg.eval.system_prompt:  # only when set, so eval dirs made before the option stay resumable
        from safetrigger.prompts import prompt_id

        settings["system_prompt"] = prompt_id(cfg.eval.system_prompt)
    if cfg.eval.self_audit:  # the generations file holds the audited responses: never mix the two
        settings["self_audit"] = True
    edir.store.begin_stage(stage, dataclasses.asdict(cfg), settings)
    raw = edir.store.stage(stage)
    done = raw.done_ids()
    # Raw ids carry the job name: two benchmarks may hold the same query id.
    todo = [dataclasses.replace(q, id=f"{j.name}/{q.id}") for j in jobs for q in j.queries
            if any(f"{j.name}/{q.id}:{s}" not in done for s in range(gen.num_samples))]
    log.info("eval: %s: %d queries to generate", model, len(todo))
    if todo:
        generate_rows(stage, model_cfg, gen, todo, raw, edir.store, system_extra=system_extra(cfg))
    rows = raw.rows()
    if cfg.eval.self_audit:
        from safetrigger.evaluation.self_audit import run_self_audit

        rows = run_self_audit(cfg, edir, model, model_cfg, rows, gen)
    finalize_rows(cfg, edir, model, model_cfg, jobs, gen, rows)
    edir.store.finish_stage(stage, {"rows": len(raw.rows())})


def system_extra(cfg: RunConfig) -> str | None:
    """The text ``eval.system_prompt`` adds to every eval model's system prompt, or None."""
    if not cfg.eval.system_prompt:
        return None
    from safetrigger.prompts import load_prompt

    return load_prompt(cfg.eval.system_prompt)


def finalize_rows(cfg: RunConfig, edir: EvalDir, model: str, model_cfg: ModelConfig, jobs: list[Job], gen, raw_rows) -> None:
    """Raw rows not yet in their job's generations file -> schema rows appended there."""
    from safetrigger.generation import needs_weights

    by_id = {r["id"]: r for r in raw_rows}
    pending = []
    for j in jobs:
        out = edir.generations(model, j.name)
        done = out.done_ids()
        pending += [(j, out, by_id[f"{j.name}/{i}"]) for i in sorted(j.ids(gen.num_samples) - done) if f"{j.name}/{i}" in by_id]
    if not pending:
        return
    from safetrigger.generation import build_prompts
    from safetrigger.models import load_model, system_prompt
    from safetrigger.stages.generate import with_extra

    with_entropy = cfg.eval.entropy and gen.backend != "openai"  # a server gives no full distribution
    loaded = load_model(model_cfg, weights=with_entropy and needs_weights(gen))
    entropies = [None] * len(pending)
    if with_entropy:
        from safetrigger.evaluation.entropy import first_answer_entropies
        from safetrigger.generation import make_backend

        system = with_extra(system_prompt(model_cfg, loaded.reasoning), system_extra(cfg))
        built = build_prompts(loaded.tokenizer, [r["query"] for _, _, r in pending], loaded.reasoning, system)
        # a self-audited response regenerated from pass ②'s prompt is scored after that prompt
        prompts = [r.get("prompt_text") or p for (_, _, r), p in zip(pending, built)]
        backend = make_backend(loaded, dataclasses.replace(gen, batch_size=cfg.eval.entropy_batch_size), desc="entropy")
        entropies = first_answer_entropies(loaded.tokenizer, backend, prompts, [r for _, _, r in pending])
    rows: dict[str, list] = {}
    for (j, out, r), h in zip(pending, entropies):
        rows.setdefault(j.name, [out, []])[1].append(schema_row(j, r, loaded.tokenizer, h))
    for out, chunk in rows.values():
        out.append(chunk)


def _n_tokens(tokenizer, text: str | None) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def schema_row(job: Job, raw: dict, tokenizer, entropy: float | None) -> dict:
    """A generations-file row (see tables / the report contract) from a raw generation row."""
    from safetrigger.response_format import SAFE_CLOSE, SAFE_OPEN

    prefix = f"{job.name}/"
    block = None if raw.get("safe") is None else f"{SAFE_OPEN}\n{raw['safe']}\n" + (SAFE_CLOSE if raw.get("has_safe") else "")
    keep = ("category", "source", "query", "response", "think", "safe", "answer", "has_safe", "issues",
            "think_finish", "answer_finish", "budget_hit", "think_tokens", "prompt_tokens")
    return {
        "id": raw["id"].removeprefix(prefix), "query_id": raw["query_id"].removeprefix(prefix),
        "benchmark": job.name, "group": job.group, "sample": raw.get("sample_index", 0),
        **{k: raw.get(k) for k in keep},
        "safe_tokens": _n_tokens(tokenizer, block),
        "answer_tokens": _n_tokens(tokenizer, raw.get("answer")),
        "phase2_tokens": raw.get("answer_tokens"),  # as generated: <safe> block + answer
        # the cost of the response: every generated token, reasoning included, over all passes
        "generated_tokens": raw.get("generated_tokens", (raw.get("think_tokens") or 0) + (raw.get("answer_tokens") or 0)),
        "self_audit": raw.get("self_audit"),
        "first_answer_entropy": entropy,
    }


def current_rows(edir: EvalDir, model: str, job: Job, num_samples: int) -> list[dict]:
    """The generations of ``job``'s current queries (a smaller limit ignores older extra rows)."""
    wanted = job.ids(num_samples)
    return [r for r in edir.generations(model, job.name).rows() if r["id"] in wanted]


# ---------------------------------------------------------------------------- judging


def build_judges(cfg: RunConfig) -> dict:
    """The configured judges, options from the ``judge`` section where each accepts them."""
    from safetrigger.judges import judge_from_config

    if not cfg.eval.judges:
        raise ConfigError("eval.judges is empty: name at least one judge (e.g. [refusal-minilm])")
    return {check_name("judge", n): judge_from_config(dataclasses.replace(cfg.judge, name=n)) for n in cfg.eval.judges}


def judge_pairs(jobs: list[Job], judges: dict, notes: list[str]) -> list[tuple[Job, str]]:
    """(job, judge name) to judge: every judge on judged benchmarks, the scorer on accuracy ones."""
    pairs = []
    for j in jobs:
        if j.bench.metric == "accuracy":
            pairs.append((j, metrics.ACCURACY_JUDGE))
            continue
        for name in judges:
            if j.bench.metric == "overrefusal" and not metrics.measures_refusal(name):
                notes.append(f"judge {name} measures harm, not refusal: no over-refusal row for {j.name}")
                continue
            pairs.append((j, name))
    return pairs


def verdict_rows(cfg: RunConfig, job: Job, judge_name: str, judge, gens: list[dict]) -> list[dict]:
    """One verdict-file row per generation row (the final answer only goes to the judge)."""
    from safetrigger.judges import JudgeItem

    e = cfg.eval
    policies = [metrics.answer_policy(g, e.strict_think, e.judge_truncated) for g in gens]
    if judge_name == metrics.ACCURACY_JUDGE:
        queries = {q.id: q for q in job.queries}
        return [{"id": g["id"], "judge": judge_name, "verdict": None, "policy": p,
                 "correct": p != metrics.NO_ANSWER and job.bench.score(queries[g["query_id"]], g["answer"])}
                for g, p in zip(gens, policies)]
    asked = [i for i, p in enumerate(policies) if p != metrics.NO_ANSWER]
    verdicts = dict(zip(asked, judge.judge([JudgeItem(gens[i]["query"], gens[i]["answer"], gens[i]["id"]) for i in asked])))
    return [{"id": g["id"], "judge": judge_name, "verdict": verdicts[i].to_dict() if i in verdicts else None,
             "policy": p, "correct": None} for i, (g, p) in enumerate(zip(gens, policies))]


def check_existing(cfg: RunConfig, out: StageFile, identity: str | None, gens: dict[str, dict]) -> None:
    """Refuse to extend a verdict file made by a differently configured judge or answer policy."""
    rows = out.rows()
    seen = {r["verdict"]["judge"] for r in rows if r.get("verdict")}
    if identity is not None and seen - {identity}:
        raise SafeTriggerError(f"{out.path} holds verdicts of {', '.join(sorted(seen))}, not {identity}; "
                               f"delete the file or use another eval.output_subdir")
    e = cfg.eval
    if any(r["id"] in gens and r["policy"] != metrics.answer_policy(gens[r["id"]], e.strict_think, e.judge_truncated) for r in rows):
        raise SafeTriggerError(f"{out.path} was judged under another answer policy (eval.strict_think / eval.judge_truncated); "
                               f"delete the file or use another eval.output_subdir")


def judge_job(cfg: RunConfig, edir: EvalDir, model: str, job: Job, judge_name: str, judge, gen) -> None:
    out = edir.verdicts(model, job.name, judge_name)
    rows = current_rows(edir, model, job, gen.num_samples)
    check_existing(cfg, out, judge.identity if judge is not None else None, {g["id"]: g for g in rows})
    gens = [g for g in rows if g["id"] not in out.done_ids()]
    for start in range(0, len(gens), gen.save_every):
        out.append(verdict_rows(cfg, job, judge_name, judge, gens[start : start + gen.save_every]))
    if gens:
        log.info("eval: %s / %s / %s: judged %d rows", model, job.name, judge_name, len(gens))


# ---------------------------------------------------------------------------- results


def result_rows(edir: EvalDir, models, pairs, num_samples: int) -> tuple[list[dict], dict, dict]:
    """The result rows, plus what the statistics need from the same files: per-row outcomes by
    id, keyed (model, benchmark, judge, metric), with the complete-<safe>-block outcome under
    judge None; and per-query values per (model, judge, group), one list per benchmark."""
    from safetrigger.evaluation.comparisons import SAFE_METRIC

    rows, outcomes, per_query = [], {}, {}
    for model in models:
        for job, judge_name in pairs:
            gens = current_rows(edir, model, job, num_samples)
            verdicts = {r["id"]: r for r in edir.verdicts(model, job.name, judge_name).rows()}
            row = metrics.result_row(model, job.bench, judge_name, gens, verdicts)
            rows.append(row)
            outs, _ = metrics.outcomes(job.bench, gens, verdicts)
            outcomes[(model, job.name, row["judge"], row["metric"])] = {g["id"]: o for g, o in zip(gens, outs)}
            outcomes.setdefault((model, job.name, None, SAFE_METRIC), {g["id"]: bool(g.get("has_safe")) for g in gens})
            per_query.setdefault((model, row["judge"], row["group"]), []).append(metrics.per_query(gens, outs))
    return rows, outcomes, per_query


def statistics_settings() -> dict:
    """How the intervals and tests of results.json were computed."""
    from safetrigger import statistics as st

    return {"level": st.LEVEL, "rate_interval": "Wilson score (no continuity correction)",
            "category_mean_interval": f"percentile bootstrap over queries within each benchmark, {st.N_BOOT} resamples, seed {st.BOOT_SEED}",
            "test": "exact two-sided McNemar (binomial on the discordant pairs), rows paired by id",
            "alpha": st.ALPHA, "marker": st.SIG_MARK}


def build_results(cfg: RunConfig, edir: EvalDir, models, jobs, judges, pairs, gen, notes, t0: float) -> dict:
    from safetrigger.evaluation.comparisons import compare, comparison_pairs
    from safetrigger.generation import output_settings

    stages = edir.store.manifest().get("stages", {})
    rows, outcomes, per_query = result_rows(edir, models, pairs, gen.num_samples)
    comparisons = compare(outcomes, comparison_pairs({m: spec for m, (spec, _) in models.items()}), notes)
    return {
        "created": timestamps.now(),
        "run_dir": str(cfg.run_dir),
        "models": {m: {"spec": spec, "identity": stages.get(f"raw/{m}", {}).get("model")} for m, (spec, _) in models.items()},
        "benchmarks": {j.name: {"group": j.group, "metric": j.bench.metric, "n": len(j.queries) * gen.num_samples,
                                "version": j.bench.version} for j in jobs},
        "judges": {n: j.identity for n, j in judges.items()},
        "generation": output_settings(gen),
        "policy": {"strict_think": cfg.eval.strict_think, "judge_truncated": cfg.eval.judge_truncated},
        "statistics": statistics_settings(),
        "rows": rows,
        "category_means": metrics.category_means(rows, list(judges)),
        "category_means_ci": metrics.category_means_ci(per_query, list(models), list(judges)),
        "comparisons": comparisons,
        "notes": notes,
        "wall_s": round(time.perf_counter() - t0, 3),
    }


def run_eval(cfg: RunConfig, store: RunStore) -> dict:
    """Evaluate every model of ``eval.models`` on ``eval.benchmarks`` with ``eval.judges``;
    writes the files listed in the module docstring. Returns the stage stats."""
    from safetrigger.evaluation.tables import write_results

    t0 = time.perf_counter()
    notes: list[str] = []
    gen = eval_generation(cfg)
    judges = build_judges(cfg)
    jobs = benchmark_jobs(cfg)
    models = resolve_models(cfg, store, notes)
    store.update_stage(STAGE, status="running", started=timestamps.now(),
                       settings=dataclasses.asdict(cfg.eval))
    edir = EvalDir.of(cfg)
    for name, (_, model_cfg) in models.items():
        generate_jobs(cfg, edir, name, model_cfg, jobs, gen)
    pairs = judge_pairs(jobs, judges, notes)
    order = [*judges, metrics.ACCURACY_JUDGE]
    for job, judge_name in sorted(pairs, key=lambda p: order.index(p[1])):  # one judge after the other
        for name in models:
            judge_job(cfg, edir, name, job, judge_name, judges.get(judge_name), gen)
    results = build_results(cfg, edir, models, jobs, judges, pairs, gen, notes, t0)
    paths = write_results(edir.root, results)
    stats = {"rows": len(results["rows"]), "results_md": str(paths["md"]), "notes": notes, "wall_s": results["wall_s"]}
    store.finish_stage(STAGE, stats)
    return stats
