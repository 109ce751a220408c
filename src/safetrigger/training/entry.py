"""Training stages as stand-alone recipes, for ``python -m`` and ``accelerate launch -m``.

Usage (stage 1; stage 2 is the same with ``dpo_entry``, a ``dpo.jsonl`` and ``--dpo.KEY``)::

    # one process (GPU if visible, else CPU)
    python -m safetrigger.training.sft_entry --dataset runs/x/sft.jsonl --output runs/x/sft \\
        --model-path /models/DeepSeek-R1-Distill-Llama-8B --template deepseek_r1

    # several GPUs, data parallel (see configs/accelerate/ for ZeRO-3 and FSDP)
    accelerate launch --config_file configs/accelerate/ddp.yaml -m safetrigger.training.sft_entry \\
        --dataset runs/x/sft.jsonl --output runs/x/sft --config configs/run.yaml sft.num_epochs=1

Options: ``--dataset`` (the stage's JSONL), ``--output`` (stage directory), ``--config`` (a run
YAML: only its ``model`` and training sections are read), ``--model-path``/``--template``/
``--dtype`` (shortcuts for ``model.*``), ``--max-steps``, ``--cpu`` (force CPU); any other
``--section.key VALUE`` or ``section.key=VALUE`` overrides a field of ``model`` or the stage's
section. DPO starts from ST-S: pass the SFT adapter as ``--model.adapter`` with
``--model.merge_adapter true`` (the reference model is that merged ST-S).

Supports: LoRA (default) or full fine-tuning; single process, DDP, DeepSpeed ZeRO-2/3 and FSDP via
the accelerate config; resume from ``<output>/checkpoints``; merged weights (``save_merged``).
Assumes: the model is a causal LM that transformers loads from a local dir or the hub cache; its
family has a project chat template (chatml, qwen3, deepseek_r1); every process sees the same
filesystem. Not supported: packing, multi-node without a shared filesystem, ZeRO-3 init of models
too big for one process's CPU RAM (the model is loaded whole, then sharded).
Prints the path of ``train_stats.json`` on success; one-line ``error:`` and exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from safetrigger.config import ModelConfig, explain, load_config, opt
from safetrigger.errors import SafeTriggerError


def recipe_config(section: str, train_cls: type) -> type:
    """A config class with the two sections a training recipe reads: ``model`` and ``section``."""
    return dataclasses.make_dataclass(
        f"{section.upper()}Recipe",
        [("model", ModelConfig, opt(help="The model being trained.", factory=ModelConfig)),
         (section, train_cls, opt(help=f"{section} settings.", factory=train_cls))],
    )


def parse_args(argv: list[str], section: str, train_cls: type, prog: str):
    cls = recipe_config(section, train_cls)
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"Safe Trigger {section.upper()}. Extra --model.KEY / --{section}.KEY VALUE (or KEY=VALUE) override fields:",
        epilog="\n".join(explain(cls)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--dataset", required=True, type=Path, help=f"{section} JSONL")
    p.add_argument("--output", required=True, type=Path, help="output directory of this stage")
    p.add_argument("--config", type=Path, help=f"run YAML; its 'model' and '{section}' sections are used")
    p.add_argument("--model-path", help="shortcut for model.name_or_path")
    p.add_argument("--template", help="shortcut for model.template")
    p.add_argument("--dtype", help="shortcut for model.dtype")
    p.add_argument("--max-steps", type=int, help=f"shortcut for {section}.max_steps")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is visible")
    args, rest = p.parse_known_args(argv)
    shortcuts = {"model.name_or_path": args.model_path, "model.template": args.template, "model.dtype": args.dtype, f"{section}.max_steps": args.max_steps}
    rest = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + rest
    return args, load_config(args.config, rest, cls=cls, sections=("model", section))


def main(section: str, train_cls: type, train_fn, argv: list[str] | None = None) -> int:
    rank = os.environ.get("RANK", "0")  # set by torchrun / accelerate launch; only used to label log lines
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from safetrigger.training.runner import STATS

    try:
        args, recipe = parse_args(list(sys.argv[1:] if argv is None else argv), section, train_cls, f"python -m safetrigger.training.{section}_entry")
        stats = train_fn(args.dataset, recipe.model, getattr(recipe, section), args.output, use_cpu=True if args.cpu else None)
    except SafeTriggerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == "0":
        summary = {k: stats.get(k) for k in ("examples", "dropped_overlong", "max_length", "trained_tokens", "train_loss", "steps", "world_size")}
        logging.getLogger(__name__).info("%s done: %s", section.upper(), summary)
        print(args.output / STATS)
    return 0
