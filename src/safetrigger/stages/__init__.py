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


def _activation(cfg: RunConfig, store: RunStore) -> dict:
    from safetrigger.stages.activation import run_activation

    return run_activation(cfg, store)


STAGES: dict[str, Callable[[RunConfig, RunStore], dict]] = {
    "generate": _generate,
    "activation": _activation,
}
STAGE_HELP = {
    "generate": "Pass 1: every pool query -> the model -> think_1 + answer_1 (generate.jsonl).",
    "activation": "Quick check: <safe> rate of the trained model on held-out harmful vs general prompts.",
}
