"""Tokens each stage processes: prompts read (prefill), tokens written (decode), tokens trained.

Without a run dir the counts are an **upper bound**: every reasoning, ``<safe>`` block and answer
uses its whole budget, pass ② makes every attempt, and every row survives the filters. With
``--run-dir`` (a pilot run of the same recipe, at any scale), the mean lengths, attempts and kept
shares measured in its ``<stage>.jsonl`` rows replace those assumptions; the pool sizes still come
from the config. Query lengths of bundled sets are counted from their text; hub pools and hub
benchmarks cannot be read offline, so their lengths are assumed (:data:`HUB_QUERY_TOKENS`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetrigger.errors import ConfigError

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4.0
"""Assumed: ~4 characters per token for English text with Llama-3 / Qwen BPE vocabularies."""
TEMPLATE_TOKENS = 16
"""Assumed: chat-template tokens around one user turn plus the generation prompt."""
HUB_QUERY_TOKENS = {"ultrafeedback": 200, "pku-saferlhf": 40, "wildjailbreak": 400}
"""Assumed mean query length of each hub pool (not measured here: the hub is not read by `plan`)."""
HUB_POOL_CATEGORY = {"ultrafeedback": "general", "pku-saferlhf": "harmful", "wildjailbreak": "jailbreak"}
HUB_BENCHMARKS = {  # queries (METHOD.md / the loaders' docstrings), mean query tokens (assumed)
    "hex-phi": (300, 40), "xstest": (250, 15), "xstest-unsafe": (200, 15),
    "wildjailbreak-eval": (2000, 400), "wildjailbreak-benign": (210, 400),
}
JUDGE_REPLY_TOKENS = 20
"""Llama-Guard's reply budget (``max_new_tokens`` of the judge)."""


@dataclass
class Work:
    """One stage's load on one model."""

    stage: str
    model: str
    """base | sft | dpo | a judge / rubric model id."""
    kind: str
    """generate (prefill + decode) | prefill (scoring only) | train."""
    requests: int = 0
    samples: int = 1
    """Rows per query (the stage hands the engine save_every queries x this at once)."""
    prompt_tokens: float = 0.0
    gen_tokens: float = 0.0
    train_tokens: float = 0.0
    """kind train: tokens through forward + backward, all epochs."""
    ref_tokens: float = 0.0
    """kind train (DPO): tokens through the reference model's forward, once."""
    max_length: int = 0
    """kind train: longest example, the activation-memory size."""
    basis: str = "upper bound"
    note: str = ""

    def to_dict(self) -> dict:
        return {k: (round(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Lengths:
    """Mean tokens per row; defaults are the budgets (upper bound), a run dir replaces them."""

    think_1: float
    answer_1: float
    think_2: float
    safe: float
    answer_2: float
    attempts: float
    sample_think: float
    sample_answer: float
    eval_think: float
    eval_answer: float
    sft_kept: float = 1.0
    """Share of generate rows that become SFT examples."""
    dpo_kept: float = 1.0
    """Share of DPO-pool queries that yield a pair."""
    measured: dict = field(default_factory=dict)
    """Which fields came from the run dir, and from which file."""


def _tok(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def _prompt_file_tokens(name: str) -> float:
    from safetrigger.prompts import load_prompt

    return _tok(load_prompt(name))


def pool_stats(pool: dict[str, int]) -> list[tuple[str, int, float, str]]:
    """(set name, queries, mean query tokens, category) per pool entry; nothing is downloaded."""
    from safetrigger.data import load_set
    from safetrigger.data.hub import HUB_PREFIX, parse_hub_pool

    out = []
    for name, n in pool.items():
        if name.startswith(HUB_PREFIX):
            key, _ = parse_hub_pool(name)
            if n == 0:
                raise ConfigError(f"plan needs a size for hub pool {name!r} (0 = all cannot be counted offline); give the number of queries")
            out.append((name, n, float(HUB_QUERY_TOKENS[key]), HUB_POOL_CATEGORY[key]))
            continue
        qs = load_set(name)
        qs = qs[:n] if n else qs
        cats = {q.category for q in qs}
        out.append((name, len(qs), sum(_tok(q.text) for q in qs) / max(len(qs), 1), cats.pop() if len(cats) == 1 else "mixed"))
    return out


def benchmark_stats(benchmarks: dict[str, int], seed: int) -> list[tuple[str, int, float, str, str]]:
    """(spec, queries, mean query tokens, metric, basis) per benchmark."""
    from safetrigger.evaluation.benchmarks import get_benchmark, parse_spec

    out = []
    for spec, n in benchmarks.items():
        bench = get_benchmark(spec)
        if bench.from_hub:
            size, tokens = HUB_BENCHMARKS.get(parse_spec(spec)[0], (n or 0, 100))
            out.append((spec, min(n, size) if n else size, float(tokens), bench.metric, "assumed size/length (hub)"))
            continue
        qs = bench.queries()
        qs = qs[:n] if n else qs
        out.append((spec, len(qs), sum(_tok(q.text) for q in qs) / max(len(qs), 1), bench.metric, "counted"))
    return out


def budget_lengths(cfg) -> Lengths:
    g, t, s, e = cfg.generation, cfg.trigger, cfg.sample, cfg.eval
    think = g.thinking_budget if _reasons(cfg) else 0
    return Lengths(
        think_1=think, answer_1=g.max_new_tokens,
        think_2=(t.thinking_budget or g.thinking_budget) if think else 0, safe=t.safe_budget, answer_2=g.max_new_tokens,
        attempts=t.max_attempts,
        sample_think=(s.thinking_budget or g.thinking_budget) if think else 0, sample_answer=s.max_new_tokens or g.max_new_tokens,
        eval_think=(e.thinking_budget or g.thinking_budget) if think else 0, eval_answer=e.max_new_tokens or g.max_new_tokens,
    )


def _reasons(cfg) -> bool:
    return cfg.model.reasoning != "off"


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return sum(vals) / len(vals) if vals else None


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run: skip it, this is only an estimate
    return out


def measured_lengths(cfg, run_dir: str | Path) -> Lengths:
    """Budgets replaced by what a pilot run wrote (mean tokens per row, attempts, kept shares)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"--run-dir {run} is not a directory (a run dir written by `safetrigger run`)")
    L = budget_lengths(cfg)
    sources = {
        "generate.jsonl": {"think_1": "think_tokens", "answer_1": "answer_tokens"},
        "trigger.jsonl": {"think_2": "think2_tokens", "safe": "safe_tokens", "answer_2": "answer2_tokens", "attempts": "attempts"},
        "sample.jsonl": {"sample_think": "think_tokens", "sample_answer": "answer_tokens"},
    }
    for fname, fields in sources.items():
        rows = _rows(run / fname)
        for attr, key in fields.items():
            m = _mean(rows, key)
            if m is not None:
                setattr(L, attr, m)
                L.measured[attr] = f"{fname} ({len(rows)} rows)"
    evals = [r for p in sorted((run / cfg.eval.output_subdir / "generations").glob("*/*.jsonl")) for r in _rows(p)]
    for attr, key in (("eval_think", "think_tokens"), ("eval_answer", "answer_tokens")):
        m = _mean(evals, key)
        if m is not None:
            # the answer budget covers <safe> + answer: count both as the model wrote them
            if attr == "eval_answer":
                m += _mean(evals, "safe_tokens") or 0.0
            setattr(L, attr, m)
            L.measured[attr] = f"{cfg.eval.output_subdir}/generations ({len(evals)} rows)"
    gen_rows, sft_rows = len(_rows(run / "generate.jsonl")), len(_rows(run / "sft.jsonl"))
    if gen_rows and sft_rows:
        L.sft_kept, L.measured["sft_kept"] = sft_rows / gen_rows, f"sft.jsonl / generate.jsonl ({sft_rows}/{gen_rows})"
    stats = run / "build_dpo.stats.json"
    if stats.is_file():
        d = json.loads(stats.read_text())
        if d.get("queries"):
            L.dpo_kept, L.measured["dpo_kept"] = d["kept"] / d["queries"], f"build_dpo.stats.json ({d['kept']}/{d['queries']})"
    return L


def stage_work(cfg, lengths: Lengths | None = None) -> list[Work]:
    """The work of every stage in ``cfg.stages`` (CPU-only stages give no rows)."""
    from safetrigger.plan.resolve import judge_model

    L = lengths or budget_lengths(cfg)
    basis = "measured lengths + config sizes" if L.measured else "upper bound"
    g = cfg.generation
    system = 0.0
    if cfg.model.system_prompt:
        system = _tok(cfg.model.system_prompt)
    elif cfg.model.reasoning == "prompted":
        system = _prompt_file_tokens("reasoning/prompted_system_v1")
    over = TEMPLATE_TOKENS + system
    pool = pool_stats(cfg.data.pool)
    judge_id = judge_model(cfg, cfg.judge.name)
    lg_prompt = _prompt_file_tokens("judges/llama_guard3_v1") + TEMPLATE_TOKENS
    out: list[Work] = []
    stages = set(cfg.stages)

    if "generate" in stages:
        n = sum(p[1] for p in pool) * g.num_samples
        out.append(Work("generate", "base", "generate", n, g.num_samples, sum(p[1] * (p[2] + over) for p in pool) * g.num_samples,
                        n * (L.think_1 + L.answer_1), basis=basis))
    risky = [p for p in pool if p[3] in cfg.trigger.categories]
    if "trigger" in stages and risky:
        n = sum(p[1] for p in risky) * g.num_samples
        a = L.attempts
        analysis = _prompt_file_tokens(cfg.trigger.prompt)
        prompt = sum(p[1] * (p[2] + over + analysis + L.think_1) for p in risky) * g.num_samples
        out.append(Work("trigger", "base", "generate", round(n * a), g.num_samples, prompt * a, n * a * (L.think_2 + L.safe + L.answer_2),
                        basis=basis, note=f"{a:g} attempts per row"))
        if cfg.trigger.judge and judge_id:
            out.append(Work("trigger", judge_id, "generate", round(n * a), g.num_samples, n * a * lg_prompt + a * sum(p[1] * p[2] for p in risky) * g.num_samples + n * a * L.answer_2,
                            n * a * JUDGE_REPLY_TOKENS, basis=basis, note=f"judge {cfg.judge.name}"))
    general_len = L.think_1 + L.answer_1
    risky_len = L.think_1 + L.safe + L.answer_2
    examples = [(p[1] * g.num_samples * L.sft_kept, p[2] + over + (risky_len if p[3] in cfg.trigger.categories else general_len)) for p in pool]
    if "sft" in stages:
        n = sum(e[0] for e in examples)
        tokens = sum(e[0] * e[1] for e in examples)
        out.append(Work("sft", "base", "train", round(n), train_tokens=tokens * _epochs(cfg.sft, n),
                        max_length=_max_length(cfg.sft, max((e[1] for e in examples), default=0)), basis=basis,
                        note=f"{_epochs(cfg.sft, n):g} epochs"))
    if "activation" in stages:
        act = pool_stats(cfg.activation.pool)
        n = sum(p[1] for p in act)
        out.append(Work("activation", cfg.activation.model_stage, "generate", n, 1, sum(p[1] * (p[2] + over) for p in act),
                        n * (L.eval_think + L.eval_answer), basis=basis))
    dpo_pool = pool_stats(cfg.sample.pool)
    k = cfg.sample.num_samples
    if "sample" in stages:
        n = sum(p[1] for p in dpo_pool) * k
        out.append(Work("sample", cfg.sample.model_stage, "generate", n, k, sum(p[1] * (p[2] + over) for p in dpo_pool) * k,
                        n * (L.sample_think + L.sample_answer), basis=basis, note=f"{k} samples per query"))
    if "score" in stages:
        n = sum(p[1] for p in dpo_pool) * k
        q = sum(p[1] * p[2] for p in dpo_pool) * k
        if judge_id:
            out.append(Work("score", judge_id, "generate", n, k, n * lg_prompt + q + n * L.sample_answer, n * JUDGE_REPLY_TOKENS,
                            basis=basis, note=f"judge {cfg.judge.name}"))
        rubric = _prompt_file_tokens(cfg.score.reasoning_rubric) + _prompt_file_tokens(cfg.score.safe_rubric)
        out.append(Work("score", cfg.score.rubric_model, "prefill", 2 * n, 2 * k,
                        n * (rubric + 2 * TEMPLATE_TOKENS) + 2 * q + n * (L.sample_think + L.safe), basis=basis,
                        note="T_full + S_full rubric questions (one next-token distribution each)"))
    if "dpo" in stages:
        pairs = sum(p[1] for p in dpo_pool) * L.dpo_kept
        pair_tokens = sum(p[1] * 2 * (p[2] + over + L.sample_think + L.sample_answer) for p in dpo_pool) * L.dpo_kept
        longest = max((p[2] + over + L.sample_think + L.sample_answer for p in dpo_pool), default=0)
        out.append(Work("dpo", "sft", "train", round(pairs), train_tokens=pair_tokens * _epochs(cfg.dpo, pairs),
                        ref_tokens=pair_tokens if cfg.dpo.precompute_ref_log_probs else pair_tokens * _epochs(cfg.dpo, pairs),
                        max_length=_max_length(cfg.dpo, longest), basis=basis,
                        note="chosen + rejected per pair; reference log-probs " + ("once" if cfg.dpo.precompute_ref_log_probs else "every step")))
    if "eval" in stages:
        out += eval_work(cfg, L, over, lg_prompt, basis)
    return out


def eval_work(cfg, L: Lengths, over: float, lg_prompt: float, basis: str) -> list[Work]:
    from safetrigger.evaluation import metrics
    from safetrigger.plan.resolve import judge_model

    e = cfg.eval
    benches = benchmark_stats(e.benchmarks, e.seed)
    n = sum(b[1] for b in benches) * e.num_samples
    prompt = sum(b[1] * (b[2] + over) for b in benches) * e.num_samples
    gen = n * (L.eval_think + L.eval_answer)
    out = []
    for name, spec in e.models.items():
        out.append(Work("eval", spec, "generate", n, e.num_samples, prompt, gen, basis=basis, note=f"model {name}"))
        if e.entropy:
            out.append(Work("eval", spec, "prefill", n, e.num_samples, prompt + gen, basis=basis, note=f"first-answer-token entropy, model {name}"))
    for judge in e.judges:
        jid = judge_model(cfg, judge)
        if not jid:
            continue  # offline judges: CPU, not counted
        harm = [b for b in benches if b[3] == "asr" or (b[3] == "overrefusal" and metrics.measures_refusal(judge))]
        m = sum(b[1] for b in harm) * e.num_samples * len(e.models)
        q = sum(b[1] * b[2] for b in harm) * e.num_samples * len(e.models)
        out.append(Work("eval", jid, "generate", m, e.num_samples, m * lg_prompt + q + m * L.eval_answer, m * JUDGE_REPLY_TOKENS,
                        basis=basis, note=f"judge {judge}"))
    return out


def _epochs(train_cfg, examples: float) -> float:
    if train_cfg.max_steps > 0:
        # one process assumed: a step takes per_device_batch_size x gradient_accumulation_steps examples
        per_step = train_cfg.per_device_batch_size * train_cfg.gradient_accumulation_steps
        return 0.0 if not examples else train_cfg.max_steps * per_step / examples
    return float(train_cfg.num_epochs)


def _max_length(train_cfg, longest: float) -> int:
    """The activation-memory length: the configured max_length / cap, else the longest example."""
    if train_cfg.max_length:
        return int(train_cfg.max_length)
    longest = int(round(longest))
    return min(int(train_cfg.max_length_cap), longest) if train_cfg.max_length_cap else longest
