"""Query sets for Safe Trigger: vendored offline sets with leak-free splits, user files, hub pools.

    from safetrigger.data import list_sets, load_set, draw_pool
    pool = draw_pool({"general:train": 50, "harmful:train": 50, "jailbreak:train": 50}, seed=0)

Set names and the split policy are documented in `safetrigger.data.registry`; sources and
licences of the vendored files in ``sets/ATTRIBUTION.md``. Modules, each importing only those
before it: `query`, `jsonl`, `splits` (hash bands), `jailbreak` (templates, wrapping),
`hub` (the paper's hub pools), `registry` (named sets), `disjoint` (leakage checks), `pools` (drawing).
"""

from .disjoint import assert_disjoint, drop_overlapping
from .hub import load_pku_saferlhf, load_ultrafeedback, load_wildjailbreak, open_dataset
from .jailbreak import Template, build_jailbreaks, load_templates
from .jsonl import load_jsonl_queries, read_jsonl
from .pools import draw_pool
from .query import CATEGORIES, RISKY_CATEGORIES, Query, normalize_text
from .registry import clear_cache, dev_sets, eval_sets, list_sets, load_set, summary, templates, train_sets
from .splits import SPLITS, split_of

__all__ = [
    "CATEGORIES", "RISKY_CATEGORIES", "SPLITS", "Query", "Template", "assert_disjoint", "build_jailbreaks",
    "clear_cache", "dev_sets", "draw_pool", "drop_overlapping", "eval_sets", "list_sets", "load_jsonl_queries",
    "load_pku_saferlhf", "load_set", "load_templates", "load_ultrafeedback", "load_wildjailbreak",
    "normalize_text", "open_dataset", "read_jsonl", "split_of", "summary", "templates", "train_sets",
]
