"""Pipeline stages. Each stage reads the run config and the run store, writes one JSONL of
rows keyed by stable ids plus a stats file, and skips ids already written (resumable).

``STAGES`` maps a stage name (the CLI subcommand and the name in ``config.stages``) to the
function that runs it; ``safetrigger run`` executes ``config.stages`` in order.
"""

from __future__ import annotations

from typing import Callable

from safetrigger.config import RunConfig
from safetrigger.runstore import RunStore


def _generate(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.generate import run_generate

    return run_generate(cfg, store)


def _trigger(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.trigger import run_trigger

    return run_trigger(cfg, store)


def _build_sft(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.build_sft import run_build_sft

    return run_build_sft(cfg, store)


def _sft(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.sft import run_sft

    return run_sft(cfg, store)


def _activation(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.activation import run_activation

    return run_activation(cfg, store)


def _sample(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.sample import run_sample

    return run_sample(cfg, store)


def _score(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.score import run_score

    return run_score(cfg, store)


def _build_dpo(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.build_dpo import run_build_dpo

    return run_build_dpo(cfg, store)


def _dpo(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.dpo import run_dpo

    return run_dpo(cfg, store)


def _eval(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.evaluation.evaluate import run_eval

    return run_eval(cfg, store)


STAGES: dict[str, Callable[[RunConfig, RunStore], dict]] = {
    "generate": _generate,
    "trigger": _trigger,
    "build-sft": _build_sft,
    "sft": _sft,
    "activation": _activation,
    "sample": _sample,
    "score": _score,
    "build-dpo": _build_dpo,
    "dpo": _dpo,
    "eval": _eval,
}
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
