"""How strongly does a trained model want to open ``<safe>`` right after ``</think>``, per category?

Teacher-forced, no sampling: for each row, P("\\n\\n<safe>" | system + query + the row's own
reasoning + "</think>"), computed in fp32. Two sets of rows:
  * ``train``: the run's ``sft.jsonl`` (what SFT fitted: risky rows carry a block, general ones not);
  * ``dev``: the reasoning of an eval model's own generations in ``<run>/eval/generations/<name>/``
    (use eval on dev splits only: this is for choosing settings).
A trigger that generalizes shows a gap on dev as large as on train. The sampled rates that eval
reports differ: temperature, top-p and the repetition penalty act between the two, and on dev
recipe M' (README "Demo results") P fell on advbench-dev while sampled blocks rose. A cheap
first look, not a substitute for eval. ``--sampled`` adds a second column: the probability
that the sampler itself emits the opening (after one or two line breaks), after the generation backends' own logits chain
(output-only repetition penalty with the format spared, then temperature, then top-p; the
transformers backend's processors, which the vLLM backend reproduces), so the gap between P and
the sampled rate can be split into what the decoding settings add and what the sampled
reasoning adds. Usage:

    python scripts/trigger_probability.py runs/dev-i/sft/model runs/dev-i [--gen st-s] [--adapter runs/x/dpo/adapter]
        [--sampled --temperature 0.7 --top-p 0.9 --repetition-penalty 1.2 [--spare-leading]]
"""

from __future__ import annotations

import argparse
import glob
import json
from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from safetrigger.chat_templates import render_prompt
from safetrigger.generation.base import BlockSpare
from safetrigger.generation.reasoning import CLOSE_THINK
from safetrigger.prompts import load_prompt

SYSTEM = load_prompt("reasoning/prompted_system_v1")
OPEN = "\n\n<safe>"  # tokenized together with what precedes it: 'Ċ','Ċ','<','safe','>' after '</think>'
# The sampler can also open the block after one line break (the answer text is stripped, so both
# read as the same response): with the second '\n' penalized, that is the path it takes.
SAMPLED_OPENS = (OPEN, "\n<safe>")


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
    ap.add_argument("--sampled", action="store_true", help="also P of the opening under the sampling settings below")
    ap.add_argument("--temperature", type=float, default=0.7, help="with --sampled (the demo's eval: 0.7)")
    ap.add_argument("--top-p", type=float, default=0.9, help="with --sampled (the demo: 0.9)")
    ap.add_argument("--repetition-penalty", type=float, default=1.2, help="with --sampled (the demo: 1.2)")
    ap.add_argument("--spare-leading", action="store_true", help="with --sampled: as generation.penalty_spares_leading")
    ap.add_argument("--audit", metavar="MODEL", help="also ask MODEL (e.g. embedded: the base) the probe's audit question "
                    "about each dev row's query and reasoning, and report how well its P(yes) separates the sets")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload().eval()

    spare = BlockSpare.of(tok)

    @torch.no_grad()
    def p_open(query: str, think: str, system: str = SYSTEM) -> tuple[float, float | None]:
        prefix = phase2_prompt(tok, system, query, think)
        ids = tok(prefix, add_special_tokens=False).input_ids
        plain, sampled = None, 0.0
        for opening in SAMPLED_OPENS if args.sampled else (OPEN,):
            full = tok(prefix + opening, add_special_tokens=False).input_ids
            if full[: len(ids)] != ids:
                raise ValueError("the prefix tokenizes differently once the block is appended")
            logits = model(torch.tensor([full])).logits[0].float()
            target = full[len(ids):]
            if plain is None:  # the trained path only
                logp = torch.log_softmax(logits, -1)
                plain = float(sum(logp[len(ids) - 1 + i, t] for i, t in enumerate(target)).exp())
            if not args.sampled:
                break
            chain = sampling_chain(len(ids))  # fresh per path: the sparing penalty keeps per-row state
            path = 1.0
            for i, t in enumerate(target):
                pos = len(ids) - 1 + i
                scores = chain(torch.tensor([full[: pos + 1]]), logits[pos].unsqueeze(0).clone())
                path *= float(torch.softmax(scores, -1)[0, t])
            sampled += path
        return plain, (sampled if args.sampled else None)

    def sampling_chain(prompt_width: int):
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        from safetrigger.generation.transformers_backend import repetition_penalty

        steps = list(repetition_penalty(args.repetition_penalty, prompt_width, spare, args.spare_leading)) if args.repetition_penalty != 1.0 else []
        steps += [TemperatureLogitsWarper(args.temperature), TopPLogitsWarper(args.top_p)]
        return LogitsProcessorList(steps)

    def report(split: str, items: list[tuple[str, tuple[float, float | None]]]) -> None:
        by = defaultdict(list)
        for cat, p in items:
            by[cat].append(p)
        for cat, rows in sorted(by.items()):
            ps = [p for p, _ in rows]
            line = f"{split:6s} {cat:24s} n={len(ps):4d}  mean P={sum(ps) / len(ps):.3f}  P>0.5: {sum(p > 0.5 for p in ps) / len(ps):.2f}"
            if args.sampled:
                qs = [q for _, q in rows]
                line += f"  sampled P={sum(qs) / len(qs):.3f}"
            print(line)
        separation(split, by)

    def separation(split: str, by: dict, columns=None) -> None:
        """How well P alone tells each risky set from the general one: AUROC (the probe's
        ``metrics.auroc``), and the share of risky rows above the threshold that at most 10 % of
        general rows pass (the issue's adaptive-trigger target asks >= 80 % at <= 10 %)."""
        from safetrigger.evaluation.metrics import auroc as area

        general = next((c for c in by if c.startswith("general")), None)
        if general is None:
            return
        for col, name in columns or [(0, "P")] + ([(1, "sampled P")] if args.sampled else []):
            neg = [r[col] for r in by[general]]
            for cat in sorted(c for c in by if c != general):
                pos = [r[col] for r in by[cat]]
                auroc = area(pos, neg)
                t = min((v for v in set(pos + neg) if sum(x >= v for x in neg) <= 0.1 * len(neg)), default=float("inf"))
                tpr = sum(x >= t for x in pos) / len(pos)
                print(f"{split:6s} {name:9s} {cat} vs {general}: AUROC={auroc:.2f}  risky share at <=10 % general={tpr:.2f}")

    train = []
    for line in open(f"{args.run}/sft.jsonl", encoding="utf-8"):
        r = json.loads(line)
        by_role = {m["role"]: m["content"] for m in r["messages"]}
        think = by_role["assistant"].split("<think>\n", 1)[1].split("\n</think>", 1)[0]
        train.append(("general" if r["category"] == "general" else "risky", p_open(by_role["user"], think, by_role.get("system", SYSTEM))))
    report("train", train)
    dev, dev_rows = [], []
    for f in sorted(glob.glob(f"{args.run}/eval/generations/{args.gen}/*.jsonl")):
        for line in open(f, encoding="utf-8"):
            r = json.loads(line)
            if r.get("think") is not None:
                dev.append((r["benchmark"], p_open(r["query"], r["think"])))
                dev_rows.append(r)
    report("dev", dev)

    def audit(rows: list[dict]) -> None:
        """Does the model know the difference at all? The probe's audit question, with and
        without the row's reasoning: a separation near 0.5 here leaves SFT nothing to tie to."""
        from safetrigger.config import GenerationConfig, ModelConfig, ProbeConfig
        from safetrigger.judges.yes_no import scorer_for
        from safetrigger.prompts import fill

        scorer = scorer_for(ModelConfig(name_or_path=args.audit), GenerationConfig(backend="transformers", progress=False))
        template = load_prompt(ProbeConfig().prompt)
        for label, with_reasoning in (("audit, query + reasoning", True), ("audit, query only", False)):
            qs = [fill(template, query=r["query"], reasoning=r["think"].strip() if with_reasoning else "") for r in rows]
            by = defaultdict(list)
            for r, a in zip(rows, scorer.ask(qs)):
                by[r["benchmark"]].append((a.score,))
            for cat, vals in sorted(by.items()):
                print(f"{label}: {cat:24s} n={len(vals):4d}  mean P(yes)={sum(v for v, in vals) / len(vals):.3f}")
            separation(label, by, columns=[(0, "P(yes)")])

    if args.audit:
        audit(dev_rows)


if __name__ == "__main__":
    main()
