"""Generation throughput of the embedded model (SmolLM2-135M-Instruct) on this machine.

Prints completion tokens/s at batch 1 and at the configured default batch size, with the
backend exactly as the pipeline uses it (left padding, length-sorted batches, stop strings).

    python bench/generation_throughput.py [--new-tokens 128] [--dtypes auto,bfloat16] [--batch 32] [--reference bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetrigger.config import GenerationConfig, ModelConfig  # noqa: E402
from safetrigger.data import draw_pool  # noqa: E402
from safetrigger.generation import SamplingParams, make_backend  # noqa: E402
from safetrigger.models import load_model  # noqa: E402


def measure(backend, prompts, new_tokens: int) -> dict:
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, top_p=0.95, stop=["</think>"], seed=0)
    t0 = time.perf_counter()
    out = backend.complete(prompts, params)
    dt = time.perf_counter() - t0
    toks = sum(c.completion_tokens for row in out for c in row)
    return {"sequences": len(prompts), "completion_tokens": toks, "seconds": round(dt, 2), "tokens_per_s": round(toks / dt, 1)}


def reference(lm_dir: str, prompts: list[str], new_tokens: int, dtype: str) -> dict:
    """Plain HF generate (no safetrigger code), the reference setting of issue #2."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=getattr(torch, dtype)).eval()
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=0.95, pad_token_id=tok.pad_token_id)
    dt = time.perf_counter() - t0
    gen = out[:, enc["input_ids"].shape[1] :]
    toks = int((gen != tok.pad_token_id).sum())
    return {"reference": "plain HF generate", "dtype": dtype, "batch_size": len(prompts), "completion_tokens": toks, "seconds": round(dt, 2), "tokens_per_s": round(toks / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=GenerationConfig().batch_size, help="batched measurement size")
    ap.add_argument("--dtypes", default="auto", help="comma list: auto,bfloat16,float32")
    ap.add_argument("--batch1-prompts", type=int, default=2)
    ap.add_argument("--reference", default="bfloat16", help="also time plain HF generate at this dtype ('' to skip)")
    args = ap.parse_args()
    queries = [q.text for q in draw_pool({"general:train": 0}, seed=0)]
    results = []
    for dtype in args.dtypes.split(","):
        lm = load_model(ModelConfig(dtype=dtype))
        for bs, n in ((1, args.batch1_prompts), (args.batch, args.batch)):
            be = make_backend(lm, GenerationConfig(batch_size=bs, progress=False))
            prompts = [lm.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True, open_think=False) for q in queries[:n]]
            measure(be, prompts[:1], 8)  # warm-up
            r = measure(be, prompts, args.new_tokens)
            r.update(dtype=lm.identity["dtype"], batch_size=bs, threads=__import__("torch").get_num_threads())
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.reference:
        print(json.dumps(reference(lm.identity["resolved"], prompts, args.new_tokens, args.reference)), flush=True)


if __name__ == "__main__":
    main()
