"""Stage ``generate`` (pass ①): every query of the pool → the model → reasoning + answer.

Assumes: ``data.pool`` names registered query sets; the model loads as ``model`` says.
Writes ``generate.jsonl`` with one row per (query, sample), id ``<query id>:<sample>``, and
``generate.stats.json``. Re-running skips ids already written.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from safetrigger.config import RunConfig
from safetrigger.runstore import RunStore
from safetrigger.stages.stats import generation_stats

log = logging.getLogger(__name__)
STAGE = "generate"


def sample_id(query_id: str, sample: int) -> str:
    return f"{query_id}:{sample}"


def run_generate(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.data import draw_pool

    settings = {"data": asdict(cfg.data)}
    if cfg.primer.text:  # only when set, so run dirs made before the option stay resumable
        settings["primer"] = asdict(cfg.primer)
    queries = draw_pool(cfg.data.pool, cfg.data.seed, cfg.data.max_query_chars)
    return generate_stage(STAGE, cfg, cfg.model, queries, store, settings, primer=cfg.primer)


def think_prefixes(queries, primer) -> list[str] | None:
    """Per query, the reasoning opener ``primer`` prefills (SafePath), or None when off."""
    if primer is None or not primer.text:
        return None
    return [primer.text if q.category in primer.categories else "" for q in queries]


def generate_stage(stage: str, cfg: RunConfig, model_cfg, queries, store: RunStore, extra_settings: dict, summarize=None,
                   primer=None) -> dict:
    """Generate responses of ``model_cfg`` for ``queries`` into ``<stage>.jsonl`` (resumable).
    ``summarize(stats) -> dict`` adds stage-specific figures to the stats before they are written."""
    from safetrigger.generation import output_settings

    gen = cfg.generation
    settings = {
        "model": asdict(model_cfg),
        "generation": output_settings(gen),
        **extra_settings,
    }
    store.begin_stage(stage, asdict(cfg), settings)
    out = store.stage(stage)
    done = out.done_ids()
    pending = [q for q in queries if any(sample_id(q.id, s) not in done for s in range(gen.num_samples))]
    todo = [q for q in pending if out.owns(q.id)]  # --shard i/n: this process's share, by query (all its samples)
    log.info("%s: %d queries, %d already done, %d to generate%s", stage, len(queries), len(queries) - len(pending), len(todo),
             f" (shard {store.shard.label} of {len(pending)} pending)" if store.shard else "")
    if todo:
        generate_rows(stage, model_cfg, gen, todo, out, store, primer=primer)
    stats = generation_stats(out.rows())
    if summarize is not None:
        stats.update(summarize(stats))
    store.finish_stage(stage, stats)
    return stats


def generate_rows(stage: str, model_cfg, gen, queries, out, store: RunStore, *, primer=None, system_extra: str | None = None) -> None:
    """Generate for ``queries`` in chunks of ``save_every``, appending each chunk as it lands.
    ``primer``: a PrimerConfig whose text opens the reasoning of its categories' queries;
    ``system_extra``: text added after the model's system prompt (the system-prompt baseline)."""
    from safetrigger.generation import build_prompts, generate_responses, make_backend, needs_weights
    from safetrigger.models import load_model, system_prompt

    loaded = load_model(model_cfg, weights=needs_weights(gen))  # a server backend only needs the tokenizer
    backend = make_backend(loaded, gen, desc=stage)
    system = with_extra(system_prompt(model_cfg, loaded.reasoning), system_extra)
    store.update_stage(stage, model=loaded.identity, backend=backend.identity(), system_prompt=system)
    done = out.done_ids()
    for start in range(0, len(queries), gen.save_every):
        chunk = queries[start : start + gen.save_every]
        prompts = build_prompts(loaded.tokenizer, [q.text for q in chunk], loaded.reasoning, system)
        responses = generate_responses(backend, prompts, gen, loaded.reasoning, think_prefixes=think_prefixes(chunk, primer))
        rows = []
        for q, per_query in zip(chunk, responses):
            for r in per_query:
                rid = sample_id(q.id, r.sample_index)
                if rid in done:
                    continue
                row = {"id": rid, "query_id": q.id, "category": q.category, "source": q.source, "query": q.text}
                row.update({k: v for k, v in r.to_dict().items() if k != "prompt_index"})
                rows.append(row)
        out.append(rows)
        log.info("%s: wrote %d rows (%d/%d queries)", stage, len(rows), start + len(chunk), len(queries))


def with_extra(system: str | None, extra: str | None) -> str | None:
    """``system`` with ``extra`` after it (a blank line between), either may be absent."""
    return "\n\n".join(t for t in (system, extra) if t) or None
