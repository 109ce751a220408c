"""Generation throughput: transformers against vLLM, in one run, on the demo's shapes.

Shapes (from the config, default configs/demo.yaml): **pass-1** — the generation pool's
prompts through the two-phase reasoning protocol (thinking budget, then the answer), one
sample each, as the `generate` stage does; **n=4** — the same prompts sampled 4 times at
temperature 1.0 / top-p 0.95, as the `sample` stage does. Each (backend, dtype) runs in a fresh
child process so that start-up and peak RSS (summed over the child's whole process tree: vLLM
spawns an engine core and a worker) are its own.

    python bench/generation_throughput.py [--config configs/demo.yaml] [--prompts 128]
        [--backends transformers,vllm] [--dtypes float32,bfloat16] [--kv-block-sizes 128,32]

Prints one JSON line per measurement and, last, ``ratio vllm/transformers: X.XX`` — vLLM's
tok/s over transformers' at the default dtype (``model.dtype: auto``), summed over both shapes.
bf16 is measured only where the CPU has native bf16 (elsewhere it runs ~8x slower than fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import cpu_name  # noqa: E402  (bench/machine.py, beside this script)


def one(args) -> None:
    """Child: load the backend, run both shapes, print one JSON line per shape."""
    import dataclasses

    from safetrigger.config import load_config
    from safetrigger.data import draw_pool
    from safetrigger.generation import build_prompts, generate_responses, make_backend, needs_weights, release_engines
    from safetrigger.models import load_model, system_prompt

    backend_name, dtype, block = args.one.split(":")
    cfg = load_config(args.config, [])
    gen = dataclasses.replace(cfg.generation, backend=backend_name, progress=False, kv_block_size=int(block))
    model_cfg = dataclasses.replace(cfg.model, dtype=dtype)
    queries = [q.text for q in draw_pool(cfg.data.pool, cfg.data.seed, cfg.data.max_query_chars)]
    queries = (queries * (args.prompts // max(1, len(queries)) + 1))[: args.prompts]
    t0 = time.perf_counter()
    loaded = load_model(model_cfg, weights=needs_weights(gen))
    backend = make_backend(loaded, gen, desc="bench")
    startup = time.perf_counter() - t0
    prompts = build_prompts(loaded.tokenizer, queries, loaded.reasoning, system_prompt(model_cfg, loaded.reasoning))
    generate_responses(backend, prompts[:2], dataclasses.replace(gen, thinking_budget=4, max_new_tokens=4), loaded.reasoning)  # warm-up
    shapes = {
        "pass-1": (gen, 1),
        "n=4": (dataclasses.replace(gen, temperature=cfg.sample.temperature, top_p=cfg.sample.top_p), cfg.sample.num_samples),
    }
    ident = backend.identity()
    for shape, (g, n) in shapes.items():
        t1 = time.perf_counter()
        out = generate_responses(backend, prompts, g, loaded.reasoning, num_samples=n)
        dt = time.perf_counter() - t1
        toks = sum(r.think_tokens + r.answer_tokens for row in out for r in row)
        print(json.dumps({"backend": backend_name, "dtype": ident.get("dtype", dtype), "kv_block_size": ident.get("kv_block_size"),
                          "shape": shape, "prompts": len(prompts),
                          "samples": n, "completion_tokens": toks, "seconds": round(dt, 2),
                          "tokens_per_s": round(toks / dt, 1), "startup_s": round(startup, 1)}), flush=True)
    release_engines()


def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_child(argv: list[str]) -> tuple[list[dict], int, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    out, err = proc.communicate()
    t.join()
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows, peak[0], err if proc.returncode else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--prompts", type=int, default=128, help="pool prompts per shape (the pool repeats if smaller)")
    ap.add_argument("--backends", default="transformers,vllm")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="bfloat16 is skipped without native CPU bf16")
    ap.add_argument("--kv-block-sizes", default="0", help="vLLM KV-cache block sizes to compare, e.g. 128,32 (0 = the backend's auto)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args)
    import torch

    from safetrigger.models import cpu_has_fast_bf16, pick_device, pick_dtype

    device = pick_device("auto")
    default = str(pick_dtype("auto", device)).replace("torch.", "")
    dtypes = [d for d in args.dtypes.split(",") if d != "bfloat16" or device != "cpu" or cpu_has_fast_bf16()]
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "native_bf16": cpu_has_fast_bf16(),
                      "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "default_dtype": default}), flush=True)
    tps: dict[tuple[str, str], float] = {}
    runs = [(b, d, k) for b in args.backends.split(",") for d in dtypes
            for k in (args.kv_block_sizes.split(",") if b == "vllm" else ["0"])]
    for backend, dtype, block in runs:
        rows, peak, err = run_child([sys.executable, __file__, "--config", args.config, "--prompts", str(args.prompts),
                                     "--one", f"{backend}:{dtype}:{block}"])
        if err:
            print(json.dumps({"backend": backend, "dtype": dtype, "kv_block_size": block, "error": err.strip().splitlines()[-1][:300]}), flush=True)
            continue
        for r in rows:
            r["peak_rss_gib"] = round(peak / 2**30, 2)
            print(json.dumps(r), flush=True)
        toks, secs = sum(r["completion_tokens"] for r in rows), sum(r["seconds"] for r in rows)
        tps.setdefault((backend, dtype), toks / secs if secs else 0.0)  # the first block size listed
    a, b = tps.get(("vllm", default)), tps.get(("transformers", default))
    print(f"ratio vllm/transformers: {a / b:.2f}" if a and b else "ratio vllm/transformers: n/a (a backend failed or was skipped)")


if __name__ == "__main__":
    main()
