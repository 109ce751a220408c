"""Stage ``sample`` (stage 2, step 1): ST-S answers every DPO-pool query ``sample.num_samples`` times.

Assumes: the ``sft`` stage finished (its adapter or weights are in the run dir). The DPO pool
(``sample.pool``, by default adversarial-harmful jailbreaks) is drawn around the SFT pool and
checked disjoint from it and from the held-out activation pool; a user file that overlaps is
refused, never silently trimmed. Writes ``sample.jsonl`` (id ``<query id>:<sample>``, the same row
shape as ``generate``) and ``sample.stats.json``; resumable like every generation stage.
"""

from __future__ import annotations

import dataclasses
import logging

from safetrigger.config import RunConfig
from safetrigger.errors import ConfigError
from safetrigger.runstore import RunStore
from safetrigger.stages.generate import generate_stage
from safetrigger.stages.trained import stage_model

log = logging.getLogger(__name__)
STAGE = "sample"


def dpo_pool(cfg: RunConfig) -> list:
    """The DPO queries: drawn from ``sample.pool`` skipping SFT-pool queries; overlaps refused."""
    from safetrigger.data import assert_disjoint, draw_pool

    sft_pool = draw_pool(cfg.data.pool, cfg.data.seed, cfg.data.max_query_chars)
    queries = draw_pool(cfg.sample.pool, cfg.sample.seed, cfg.data.max_query_chars, exclude=sft_pool)
    # Two training pools may share jailbreak templates, never a query or the prompt it wraps.
    assert_disjoint(sft_pool, queries, templates=False, what="the SFT pool (data.pool) and the DPO pool (sample.pool)")
    assert_disjoint(queries, list(cfg.activation.pool), what="the DPO pool (sample.pool) and the held-out activation pool")
    return queries


def sample_generation(cfg: RunConfig):
    """``generation`` with stage 2's sampling settings (high temperature, several samples)."""
    s = cfg.sample
    if s.num_samples < 2:
        raise ConfigError(f"sample.num_samples must be at least 2 (a pair needs two responses), got {s.num_samples}")
    gen = dataclasses.replace(cfg.generation, num_samples=s.num_samples, temperature=s.temperature, top_p=s.top_p, seed=s.seed)
    if s.thinking_budget is not None:
        gen = dataclasses.replace(gen, thinking_budget=s.thinking_budget)
    if s.max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=s.max_new_tokens)
    return gen


def run_sample(cfg: RunConfig, store: RunStore) -> dict:
    queries = dpo_pool(cfg)
    model_cfg = stage_model(cfg, store, cfg.sample.model_stage)
    run_cfg = dataclasses.replace(cfg, generation=sample_generation(cfg))
    return generate_stage(STAGE, run_cfg, model_cfg, queries, store, {"sample": dataclasses.asdict(cfg.sample), "data": dataclasses.asdict(cfg.data)})
