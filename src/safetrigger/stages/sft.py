"""Stage ``sft``: Safe Trigger SFT on ``sft.jsonl`` (from build-sft) → the ST-S model.

Writes ``<run_dir>/<sft.output_subdir>/`` (adapter or full model, optional merged weights,
train_stats.json; see safetrigger.training.sft). For several GPUs run the same training with
``accelerate launch -m safetrigger.training.sft_entry`` (configs/accelerate/); this stage runs
it in-process, which is what a single GPU or a CPU wants.
"""

from __future__ import annotations

from dataclasses import asdict

from safetrigger.config import RunConfig
from safetrigger.errors import SafeTriggerError
from safetrigger.runstore import RunStore
from safetrigger.training.config import fingerprinted

STAGE = "sft"


def run_sft(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.training import train_sft

    data = store.dir / "sft.jsonl"
    if not data.is_file():
        raise SafeTriggerError(f"{data} not found: run the 'build-sft' stage first")
    store.begin_stage(STAGE, asdict(cfg), {"model": asdict(cfg.model), "sft": fingerprinted(cfg.sft)})
    stats = train_sft(data, cfg.model, cfg.sft, store.dir / cfg.sft.output_subdir)
    stats = {**stats, "rows": stats.get("examples")}
    store.finish_stage(STAGE, stats)
    return stats
