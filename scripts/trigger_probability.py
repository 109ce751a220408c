"""How strongly does a trained model want to open ``<safe>`` right after ``</think>``, per category?

Teacher-forced, no sampling: for each row, P("\\n\\n<safe>" | system + query + the row's own
reasoning + "</think>"), computed in fp32. Two sets of rows:
  * ``train``: the run's ``sft.jsonl`` (what SFT fitted: risky rows carry a block, general ones not);
  * ``dev``: the reasoning of an eval model's own generations in ``<run>/eval/generations/<name>/``
    (use eval on dev splits only: this is for choosing settings).
A trigger that generalizes shows a gap on dev as large as on train. The sampled rates that eval
reports differ: temperature, top-p and the repetition penalty act between the two, and on dev
recipe M' (README "Demo results") P fell on advbench-dev while sampled blocks rose. A cheap
first look, not a substitute for eval. Usage:

    python scripts/trigger_probability.py runs/dev-i/sft/model runs/dev-i [--gen st-s] [--adapter runs/x/dpo/adapter]
"""

from __future__ import annotations

import argparse
import glob
import json
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from safetrigger.chat_templates import render_prompt
from safetrigger.generation.reasoning import CLOSE_THINK
from safetrigger.prompts import load_prompt

SYSTEM = load_prompt("reasoning/prompted_system_v1")
OPEN = "\n\n<safe>"  # tokenized together with what precedes it: 'Ċ','Ċ','<','safe','>' after '</think>'


def phase2_prompt(tokenizer, system: str, query: str, think: str) -> str:
    """The prompt phase 2 continues, built as generation builds it (reasoning.generate_responses):
    the template already opens '<think>\n'."""
    return render_prompt(tokenizer, query, system=system) + think.rstrip() + CLOSE_THINK


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model directory (the ST-S weights, or the base an adapter goes on)")
    ap.add_argument("run", help="run directory with sft.jsonl and eval/generations/")
    ap.add_argument("--gen", default="st-s", help="eval model whose dev generations give the reasoning")
    ap.add_argument("--adapter", help="a LoRA adapter to merge first (e.g. the ST-D adapter)")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload().eval()

    @torch.no_grad()
    def p_open(query: str, think: str, system: str = SYSTEM) -> float:
        prefix = phase2_prompt(tok, system, query, think)
        ids = tok(prefix, add_special_tokens=False).input_ids
        full = tok(prefix + OPEN, add_special_tokens=False).input_ids
        if full[: len(ids)] != ids:
            raise ValueError("the prefix tokenizes differently once the block is appended")
        logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        return float(sum(logp[len(ids) - 1 + i, t] for i, t in enumerate(full[len(ids):])).exp())

    def report(split: str, items: list[tuple[str, float]]) -> None:
        by = defaultdict(list)
        for cat, p in items:
            by[cat].append(p)
        for cat, ps in sorted(by.items()):
            print(f"{split:6s} {cat:24s} n={len(ps):4d}  mean P={sum(ps) / len(ps):.3f}  P>0.5: {sum(p > 0.5 for p in ps) / len(ps):.2f}")

    train = []
    for line in open(f"{args.run}/sft.jsonl", encoding="utf-8"):
        r = json.loads(line)
        by_role = {m["role"]: m["content"] for m in r["messages"]}
        think = by_role["assistant"].split("<think>\n", 1)[1].split("\n</think>", 1)[0]
        train.append(("general" if r["category"] == "general" else "risky", p_open(by_role["user"], think, by_role.get("system", SYSTEM))))
    report("train", train)
    dev = []
    for f in sorted(glob.glob(f"{args.run}/eval/generations/{args.gen}/*.jsonl")):
        for line in open(f, encoding="utf-8"):
            r = json.loads(line)
            if r.get("think") is not None:
                dev.append((r["benchmark"], p_open(r["query"], r["think"])))
    report("dev", dev)


if __name__ == "__main__":
    main()
