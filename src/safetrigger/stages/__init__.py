"""Pipeline stages. Each stage reads the run config and the run store, writes one JSONL of
rows keyed by stable ids plus a stats file, and skips ids already written (resumable).

``STAGES`` maps a stage name (the CLI subcommand and the name in ``config.stages``) to the
function that runs it; ``safetrigger run`` executes ``config.stages`` in order.
"""

from __future__ import annotations

import importlib
from typing import Callable

from safetrigger.config import RunConfig
from safetrigger.runstore import RunStore


def _lazy(target: str) -> Callable[[RunConfig, RunStore], dict]:
    """A stage function imported on first call (``"module:function"``): listing the stages, or
    running one, must not import torch/TRL for all the others."""
    module, _, name = target.partition(":")

    def run(cfg: RunConfig, store: RunStore) -> dict:
        return getattr(importlib.import_module(module), name)(cfg, store)

    run.__name__ = run.__qualname__ = name
    return run


STAGES: dict[str, Callable[[RunConfig, RunStore], dict]] = {
    name: _lazy(target) for name, target in {
        "generate": "safetrigger.stages.generate:run_generate",
        "trigger": "safetrigger.stages.trigger:run_trigger",
        "build-sft": "safetrigger.stages.build_sft:run_build_sft",
        "sft": "safetrigger.stages.sft:run_sft",
        "activation": "safetrigger.stages.activation:run_activation",
        "sample": "safetrigger.stages.sample:run_sample",
        "score": "safetrigger.stages.score:run_score",
        "build-dpo": "safetrigger.stages.build_dpo:run_build_dpo",
        "dpo": "safetrigger.stages.dpo:run_dpo",
        "eval": "safetrigger.evaluation.evaluate:run_eval",
    }.items()
}
TRAINING_STAGES = frozenset({"sft", "dpo"})
SHARDABLE = ("generate", "trigger", "activation", "sample", "score")
"""Stages that take ``--shard I/N``: they iterate pending rows keyed by stable ids (runstore.Shard)."""
"""Stages that train: a kept generation engine is freed before them (they need the memory)."""

STAGE_HELP = {
    "generate": "Pass 1: every pool query -> the model -> think_1 + answer_1 (generate.jsonl).",
    "trigger": "Pass 2: risky rows -> the model audits the query + its think_1 -> think_2, <safe> block, answer_2 (trigger.jsonl).",
    "build-sft": "Assemble and filter the stage-1 SFT set from generate + trigger rows (sft.jsonl; every row accounted for).",
    "sft": "Safe Trigger SFT (TRL, LoRA by default) on sft.jsonl -> the ST-S model (sft/).",
    "activation": "Quick check: <safe> rate of the trained model on held-out harmful vs general prompts.",
    "sample": "Stage 2: ST-S answers each DPO-pool query sample.num_samples times at high temperature (sample.jsonl).",
    "score": "Stage 2: flags F_safe (judge), S_exist (parser), T_full / S_full (rubric model) per response (score.jsonl).",
    "build-dpo": "Stage 2: hierarchical reward, delta filter, one (chosen, rejected) pair per query (dpo.jsonl; every query accounted for).",
    "dpo": "Stage 2: Safe Trigger DPO (TRL, LoRA on ST-S, reference = ST-S) on dpo.jsonl -> the ST-D model (dpo/).",
    "eval": "Evaluate eval.models on eval.benchmarks with every judge of eval.judges (ASR, over-refusal, accuracy, <safe> rate) -> eval/results.md.",
}
