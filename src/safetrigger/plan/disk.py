"""Disk a run needs: model weights in the hub cache, merged checkpoints, adapters and training
checkpoints, and the stage JSONL files (an estimate from parameter counts and token totals)."""

from __future__ import annotations

from safetrigger.plan.architecture import Architecture
from safetrigger.plan.cost import GIB

TEXT_BYTES_PER_TOKEN = 8.0
"""Assumed: ~4 bytes of text per token, each generated text stored twice (its parts + the full response)."""


def disk_estimate(cfg, arch: Architecture, judge: Architecture | None, work: list) -> dict:
    n = arch.params
    items = {"base weights (hub cache, bf16)": 2 * n}
    if judge is not None:
        items["judge weights (hub cache, bf16)"] = 2 * judge.params
    for stage in ("sft", "dpo"):
        if stage not in cfg.stages:
            continue
        t = getattr(cfg, stage)
        if t.use_lora:
            a = arch.lora_params(t.lora_r)
            # adapter (fp32) + save_total_limit checkpoints holding adapter + optimizer state
            items[f"{stage}: adapter + checkpoints"] = 4 * a + t.save_total_limit * 16 * a * (t.save_steps > 0)
            if t.save_merged:
                items[f"{stage}: merged weights"] = 2 * n
        else:
            items[f"{stage}: model + checkpoints"] = 2 * n + t.save_total_limit * 16 * n * (t.save_steps > 0)
    if "dpo" in cfg.stages or "sample" in cfg.stages:
        # vLLM runs stacked adapters (ST-D) from a merged checkpoint cached once per adapter set
        items["merged checkpoints for generation (ST-D)"] = 2 * n
    gen = sum(w.gen_tokens for w in work if w.kind == "generate")
    items["stage JSONL (generated text)"] = TEXT_BYTES_PER_TOKEN * gen  # queries are small beside it
    total = sum(items.values())
    return {"items_gib": {k: round(v / GIB, 2) for k, v in items.items()}, "total_gib": round(total / GIB, 1)}
