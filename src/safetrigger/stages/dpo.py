"""Stage ``dpo`` (stage 2, step 4): Safe Trigger DPO on ``dpo.jsonl`` → the ST-D model.

Starts from ST-S (base + the SFT adapter, merged) and trains a new LoRA adapter with TRL's
``DPOTrainer``; the reference is ST-S itself. Writes ``<run_dir>/<dpo.output_subdir>/`` (see
``safetrigger.training.runner``). ST-D loads as base + SFT adapter + DPO adapter (stacked,
``safetrigger.stages.trained``). For several GPUs: ``accelerate launch -m
safetrigger.training.dpo_entry`` with the SFT adapter as ``--model.adapter``.
"""

from __future__ import annotations

from dataclasses import asdict

from safetrigger.config import RunConfig
from safetrigger.errors import SafeTriggerError
from safetrigger.runstore import RunStore
from safetrigger.stages.trained import trained_model

STAGE = "dpo"


def run_dpo(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.training import train_dpo

    data = store.dir / "dpo.jsonl"
    if not data.is_file():
        raise SafeTriggerError(f"{data} not found: run the 'build-dpo' stage first")
    if data.stat().st_size == 0:
        raise SafeTriggerError(f"{data} holds no preference pairs (see build_dpo.stats.json: dropped_reasons); "
                               "sample more queries or lower reward.delta")
    model_cfg = trained_model(cfg, store, "sft")
    store.begin_stage(STAGE, asdict(cfg), {"model": asdict(model_cfg), "dpo": asdict(cfg.dpo)})
    stats = train_dpo(data, model_cfg, cfg.dpo, store.dir / cfg.dpo.output_subdir)
    stats = {**stats, "rows": stats.get("examples")}
    store.finish_stage(STAGE, stats)
    return stats
