"""Stage ``activation``: a quick check of the trained model's ``<safe>`` trigger.

Generates with the ST-S model (the ``sft`` stage's output; ``activation.model_stage: dpo`` for ST-D) on held-out prompts — by default
harmful:eval and general:eval, disjoint from every training pool — and reports, per
category, how often a complete ``<safe>`` block is emitted. Adaptive triggering means a high
rate on risky prompts and a low one on general prompts. The full evaluation (ASR per judge,
over-refusal, capability) is ``safetrigger eval``'s job; this is the cheap sanity check.
"""

from __future__ import annotations

import dataclasses

from safetrigger.config import RunConfig
from safetrigger.runstore import RunStore
from safetrigger.stages.generate import generate_stage
from safetrigger.stages.trained import trained_model, training_pools

STAGE = "activation"


def run_activation(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.data import assert_disjoint, draw_pool

    queries = draw_pool(cfg.activation.pool, cfg.data.seed, cfg.data.max_query_chars)
    assert_disjoint(training_pools(cfg), queries)
    model_cfg = trained_model(cfg, store, cfg.activation.model_stage)
    return generate_stage(
        STAGE, cfg, model_cfg, queries, store, {"activation": dataclasses.asdict(cfg.activation)}, summarize=safe_rates
    )


def safe_rates(stats: dict) -> dict:
    """Per category: share of responses with a complete <safe> block (``safe_rate``, what
    activation means) and share that opened one at all (``safe_opened_rate``)."""
    cats = {cat: c for cat, c in stats["per_category"].items() if c.get("rows")}
    return {
        "safe_rate": {cat: round(c.get("has_safe", 0) / c["rows"], 4) for cat, c in cats.items()},
        "safe_opened_rate": {cat: round(c.get("safe_opened", 0) / c["rows"], 4) for cat, c in cats.items()},
    }
