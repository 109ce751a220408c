"""Stage-1 SFT as a stand-alone recipe, for ``python -m`` and ``accelerate launch -m``.

Usage::

    # one process (GPU if visible, else CPU)
    python -m safetrigger.training.sft_entry --dataset runs/x/sft.jsonl --output runs/x/sft \\
        --model-path /models/DeepSeek-R1-Distill-Llama-8B --template deepseek_r1

    # several GPUs, data parallel (see configs/accelerate/ for ZeRO-3 and FSDP)
    accelerate launch --config_file configs/accelerate/ddp.yaml -m safetrigger.training.sft_entry \\
        --dataset runs/x/sft.jsonl --output runs/x/sft --config configs/run.yaml sft.num_epochs=1

Options: ``--dataset`` (SFT JSONL, rows with ``messages`` ending in the assistant target),
``--output`` (stage directory), ``--config`` (a run YAML: only its ``model`` and ``sft`` sections
are read), ``--model-path``/``--template``/``--dtype`` (shortcuts for ``model.*``),
``--max-steps`` (``sft.max_steps``), ``--cpu`` (force CPU); any other ``--section.key VALUE`` or
``section.key=VALUE`` overrides a field of ``model`` (ModelConfig) or ``sft`` (SFTConfig).

Supports: LoRA (default) or full fine-tuning; single process, DDP, DeepSpeed ZeRO-2/3 and FSDP via
the accelerate config; resume from ``<output>/checkpoints``; merged weights (``sft.save_merged``).
Assumes: the model is a causal LM that transformers loads from a local dir or the hub cache; its
family has a project chat template (chatml, qwen3, deepseek_r1); every process sees the same
filesystem. Not supported: packing, multi-node without a shared filesystem, ZeRO-3 init of models
too big for one process's CPU RAM (the model is loaded whole, then sharded).
Prints the path of ``train_stats.json`` on success; one-line ``error:`` and exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from safetrigger.config import ModelConfig, _build, _merge, explain, opt, parse_overrides
from safetrigger.errors import ConfigError, SafeTriggerError
from safetrigger.training.config import SFTConfig


@dataclass
class SFTRecipe:
    """The sections of a run config that SFT reads."""

    model: ModelConfig = opt(help="The model being fine-tuned.", factory=ModelConfig)
    sft: SFTConfig = opt(help="SFT settings.", factory=SFTConfig)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, SFTRecipe]:
    p = argparse.ArgumentParser(
        prog="python -m safetrigger.training.sft_entry",
        description="Safe Trigger stage-1 SFT. Extra --model.KEY / --sft.KEY VALUE (or KEY=VALUE) override fields:",
        epilog="\n".join(explain(SFTRecipe)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--dataset", required=True, type=Path, help="SFT JSONL (rows with 'messages')")
    p.add_argument("--output", required=True, type=Path, help="output directory of this stage")
    p.add_argument("--config", type=Path, help="run YAML; its 'model' and 'sft' sections are used")
    p.add_argument("--model-path", help="shortcut for model.name_or_path")
    p.add_argument("--template", help="shortcut for model.template")
    p.add_argument("--dtype", help="shortcut for model.dtype")
    p.add_argument("--max-steps", type=int, help="shortcut for sft.max_steps")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is visible")
    args, rest = p.parse_known_args(argv)
    data: dict = {}
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"config file not found: {args.config}")
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {args.config} must hold a mapping at top level")
        data = {k: loaded[k] for k in ("model", "sft") if k in loaded}
    shortcuts = {"model.name_or_path": args.model_path, "model.template": args.template, "model.dtype": args.dtype, "sft.max_steps": args.max_steps}
    rest = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + rest
    data = _merge(data, parse_overrides(rest))
    return args, _build(SFTRecipe, data)


def main(argv: list[str] | None = None) -> int:
    rank = os.environ.get("RANK", "0")  # set by torchrun / accelerate launch; only used to label log lines
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from safetrigger.training.sft import STATS, train_sft

    try:
        args, recipe = parse_args(list(sys.argv[1:] if argv is None else argv))
        stats = train_sft(args.dataset, recipe.model, recipe.sft, args.output, use_cpu=True if args.cpu else None)
    except SafeTriggerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == "0":
        summary = {k: stats.get(k) for k in ("examples", "dropped_overlong", "max_length", "trained_tokens", "train_loss", "steps", "world_size")}
        logging.getLogger(__name__).info("SFT done: %s", summary)
        print(args.output / STATS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
