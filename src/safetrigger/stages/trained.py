"""Which model a stage uses: the configured base, ST-S (after ``sft``) or ST-D (after ``dpo``)."""

from __future__ import annotations

import dataclasses

from safetrigger.config import ModelConfig, RunConfig
from safetrigger.errors import SafeTriggerError
from safetrigger.runstore import RunStore

TRAINED_ON = {"sft": None, "dpo": "sft"}
"""Which stage's model each training stage starts from (None = the configured base model)."""


def trained_model(cfg: RunConfig, store: RunStore, stage: str = "sft") -> ModelConfig:
    """Model config of a training stage's output: the model it started from plus its LoRA
    adapter (merged for faster generation), or its fully fine-tuned weights. ST-D is the base +
    the SFT adapter + the DPO adapter, stacked in that order."""
    if stage not in TRAINED_ON:
        raise SafeTriggerError(f"unknown training stage {stage!r}; one of: {', '.join(TRAINED_ON)}")
    start = cfg.model if TRAINED_ON[stage] is None else trained_model(cfg, store, TRAINED_ON[stage])
    out = store.dir / getattr(cfg, stage).output_subdir
    if (out / "adapter" / "adapter_config.json").is_file():
        adapters = ",".join(filter(None, [start.adapter, str(out / "adapter")]))
        return dataclasses.replace(start, adapter=adapters, merge_adapter=True)
    if (out / "model" / "config.json").is_file():
        return dataclasses.replace(start, name_or_path=str(out / "model"), gguf_file=None, adapter=None)
    raise SafeTriggerError(f"no trained model in {out}: run the '{stage}' stage first")


def training_pools(cfg: RunConfig) -> list[str]:
    """Every query set a trained model of this run saw (SFT pool, DPO pool): what held-out
    sets must be disjoint from."""
    return list(cfg.data.pool) + list(cfg.sample.pool)


def stage_model(cfg: RunConfig, store: RunStore, name: str) -> ModelConfig:
    """``base`` = the configured model, ``sft`` / ``dpo`` = that stage's trained model, anything
    else = a model path or hub id (with the base model's other settings)."""
    if name == "base":
        return cfg.model
    if name in TRAINED_ON:
        return trained_model(cfg, store, name)
    return dataclasses.replace(cfg.model, name_or_path=name, gguf_file=None, adapter=None)
