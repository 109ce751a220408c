"""Soak `safetrigger serve` on loopback: N requests from C concurrent clients on a tiny model.

A 2-layer random Llama (tests/tiny.py) is served in-process with the default limits
(serve.max_queue 16); C client threads send chat completions (every 4th one streamed, token
by token) with a small token budget. Anything but 200 and the intended 429 (queue full) is
an error; the script exits 1 if there is one.

    python bench/soak_serve.py [--requests 2000] [--clients 16] [--max-tokens 8]

Prints one JSON line: status counts, errors, p50/p99 latency (ms, per request, client side,
queueing included) and throughput (requests/s), with the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "bench")]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=8)
    args = ap.parse_args()

    import httpx2 as httpx

    from machine import cpu_name
    from safetrigger.config import load_config
    from safetrigger.serve import bound_port, make_server
    from tiny import save_tiny

    model = save_tiny(Path(tempfile.mkdtemp(prefix="soak-")) / "tiny")
    cfg = load_config(None, ["--model.name_or_path", str(model), "--model.template", "chatml", "--model.dtype", "float32",
                             "--model.device", "cpu", "--generation.thinking_budget", str(args.max_tokens),
                             "--generation.max_new_tokens", str(args.max_tokens)])
    srv = make_server(cfg, port=0, log_level="warning")
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{bound_port(srv)}/v1/chat/completions"

    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    next_i = iter(range(args.requests))

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                body = {"messages": [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}],
                        "temperature": 1.0, "seed": i, "stream": i % 4 == 0}
                t0 = time.perf_counter()
                try:
                    r = c.post(url, json=body)
                    ok = r.status_code == 200 and (not body["stream"] or r.text.rstrip().endswith("data: [DONE]"))
                    status = r.status_code
                except httpx.HTTPError as e:
                    ok, status = False, -1
                    r = None
                    err = f"{type(e).__name__}: {e}"
                dt = time.perf_counter() - t0
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200 and ok:
                        latencies.append(dt)
                    elif status != 429:
                        errors.append(err if r is None else f"{status}: {r.text[:200]}")

    t0 = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(args.clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    srv.should_exit = True
    thread.join(10)
    print(json.dumps({
        "cpu": cpu_name(), "cores": os.cpu_count(), "requests": args.requests, "clients": args.clients,
        "max_tokens": args.max_tokens, "statuses": statuses, "errors": len(errors), "first_errors": errors[:3],
        "p50_ms": round(1000 * percentile(latencies, 50), 1) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 99), 1) if latencies else None,
        "throughput_rps": round(len(latencies) / wall, 1), "wall_s": round(wall, 1),
    }))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
