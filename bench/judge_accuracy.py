"""Accuracy of the offline refusal judges on PyRIT's 169 human-labelled refusal rows.

Usage: ``python bench/judge_accuracy.py [--threshold 0.3] [--sweep] [--json]``

Prints accuracy of ``refusal-minilm`` and of keywords alone, confusion counts (positive =
refusal) and wall time. ``--sweep`` also shows accuracy over thresholds, recomputed from the
stored cosines and keywords (no re-encoding) — the default 0.3 was picked on these same rows,
so read the numbers as in-sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:
    import safetrigger  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from safetrigger.judges import make_judge  # noqa: E402
from safetrigger.judges.accuracy import load_refusal_eval, refusal_judge_accuracy  # noqa: E402


def sweep(thresholds: list[float]) -> list[tuple[float, float]]:
    items, labels, _ = load_refusal_eval()
    verdicts = make_judge("refusal-minilm").judge(items)  # encoder already loaded and cached
    evidence = [json.loads(v.raw) for v in verdicts]
    out = []
    for th in thresholds:
        pred = [e["keyword"] is not None or (e["cosine"] is not None and e["cosine"] < th) for e in evidence]
        out.append((th, sum(p == y for p, y in zip(pred, labels)) / len(labels)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--sweep", action="store_true", help="also print accuracy over thresholds 0.1..0.5")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = ap.parse_args()
    r = refusal_judge_accuracy(threshold=args.threshold)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        kw = r["keywords_only"]
        print(f"data: {r['data']}  n={r['n']}")
        print(f"{r['judge']}\n  accuracy {r['accuracy']:.3f}  {r['confusion']}")
        print(f"{kw['judge']}\n  accuracy {kw['accuracy']:.3f}  {kw['confusion']}")
        print(f"misjudged by refusal-minilm: {', '.join(r['mistakes']) or 'none'}")
        print(f"time: {r['seconds']} s (both judges, model load included)")
    if args.sweep:
        for th, acc in sweep([round(0.05 * k, 2) for k in range(2, 11)]):
            print(f"  threshold {th:.2f}: accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
