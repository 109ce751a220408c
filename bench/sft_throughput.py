"""SFT training throughput on this machine: full fine-tuning vs LoRA, fp32 vs bf16 autocast,
random vs length-grouped batches — the numbers the demo's training settings were chosen by.

Each variant runs ``--steps`` optimizer steps of the real SFT stage (TRL SFTTrainer, the
project's loss-mask checks) on an SFT JSONL, in a fresh child process, and prints one JSON line:
tokens/s over the rows it trained on (real tokens, padding excluded), seconds per step, and the
loss after those steps. Model loading and data preparation are not timed.

    python bench/sft_throughput.py --data runs/demo/sft.jsonl [--config configs/demo.yaml]
        [--steps 12] [--variants full:none:random,full:bf16:random,...]

A variant is ``lora|full : none|bf16 : random|group_by_length``. The last line names the fastest.
bf16 variants are skipped on CPUs without native bf16 (there autocast is emulated and slow).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import cpu_name  # noqa: E402  (bench/machine.py, beside this script)

DEFAULT_VARIANTS = ("full:none:random", "full:bf16:random", "full:bf16:group_by_length", "lora:bf16:random", "lora:none:random")


def one(args) -> None:
    """Child: train ``args.steps`` steps with one variant, print its JSON line."""
    import dataclasses

    from safetrigger.config import load_config
    from safetrigger.training import train_sft

    adapter, autocast, sampler = args.one.split(":")
    cfg = load_config(args.config, [])
    sft = dataclasses.replace(cfg.sft, use_lora=adapter == "lora", autocast=autocast, sampler=sampler,
                              max_steps=args.steps, resume=False, logging_steps=1, save_steps=0,
                              # LoRA needs a larger rate to move in few steps; irrelevant to speed
                              learning_rate=cfg.sft.learning_rate * (10 if adapter == "lora" else 1))
    with tempfile.TemporaryDirectory() as out:
        stats = train_sft(args.data, cfg.model, sft, out)
    rows = stats["steps"] * stats["effective_batch_size"]
    mean_len = stats["length"].get("mean") or stats["length"]["p50"]
    curve = stats["loss_curve"]
    print(json.dumps({
        "variant": args.one, "steps": stats["steps"], "runtime_s": stats["runtime_s"],
        "s_per_step": round(stats["runtime_s"] / max(1, stats["steps"]), 3),
        "tok_per_s": round(rows * mean_len / stats["runtime_s"], 1),
        "loss_first": curve[0][1] if curve else None, "loss_last": curve[-1][1] if curve else None,
    }), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--data", required=True, help="an SFT JSONL (a run's sft.jsonl)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args)
    from safetrigger.models import cpu_has_fast_bf16

    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "native_bf16": cpu_has_fast_bf16(), "data": args.data}), flush=True)
    results = []
    for variant in args.variants.split(","):
        if variant.split(":")[1] == "bf16" and not cpu_has_fast_bf16():
            print(json.dumps({"variant": variant, "skipped": "no native bf16 on this CPU"}), flush=True)
            continue
        cmd = [sys.executable, __file__, "--config", args.config, "--data", args.data, "--steps", str(args.steps), "--one", variant]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            print(json.dumps({"variant": variant, "error": (out.stderr or out.stdout).strip().splitlines()[-1:]}), flush=True)
            continue
        print(lines[-1], flush=True)
        results.append(json.loads(lines[-1]))
    if results:
        best = max(results, key=lambda r: r["tok_per_s"])
        base = next((r for r in results if r["variant"] == "full:none:random"), None)
        ratio = f" ({best['tok_per_s'] / base['tok_per_s']:.2f}x full:none:random)" if base else ""
        print(f"fastest: {best['variant']} {best['tok_per_s']} tok/s{ratio}")


if __name__ == "__main__":
    main()
