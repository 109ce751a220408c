"""Stage ``activation``: a quick check of the trained model's ``<safe>`` trigger.

Generates with the ST-S model (the ``sft`` stage's output) on held-out prompts — by default
harmful:eval and general:eval, disjoint from every training pool — and reports, per
category, how often a complete ``<safe>`` block is emitted. Adaptive triggering means a high
rate on risky prompts and a low one on general prompts. The full evaluation (ASR per judge,
over-refusal, capability) is ``safetrigger eval``'s job; this is the cheap sanity check.
"""

from __future__ import annotations

import dataclasses

from safetrigger.config import ModelConfig, RunConfig
from safetrigger.errors import SafeTriggerError
from safetrigger.runstore import RunStore
from safetrigger.stages.generate import generate_stage

STAGE = "activation"


def trained_model(cfg: RunConfig, store: RunStore, stage: str = "sft") -> ModelConfig:
    """Model config of a training stage's output: the base model plus its LoRA adapter
    (merged for faster generation), or its fully fine-tuned weights."""
    out = store.dir / stage
    if (out / "adapter" / "adapter_config.json").is_file():
        return dataclasses.replace(cfg.model, adapter=str(out / "adapter"), merge_adapter=True)
    if (out / "model" / "config.json").is_file():
        return dataclasses.replace(cfg.model, name_or_path=str(out / "model"), gguf_file=None, adapter=None)
    raise SafeTriggerError(f"no trained model in {out}: run the '{stage}' stage first")


def run_activation(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.data import assert_disjoint, draw_pool

    queries = draw_pool(cfg.activation.pool, cfg.data.seed, cfg.data.max_query_chars)
    assert_disjoint(list(cfg.data.pool), queries)
    model_cfg = trained_model(cfg, store, cfg.activation.model_stage)
    return generate_stage(
        STAGE, cfg, model_cfg, queries, store, {"activation": dataclasses.asdict(cfg.activation)}, summarize=safe_rates
    )


def safe_rates(stats: dict) -> dict:
    """Share of responses with a complete <safe> block, per category."""
    return {"safe_rate": {cat: round(c.get("has_safe", 0) / c["rows"], 4) for cat, c in stats["per_category"].items() if c.get("rows")}}
