"""Drawing a query pool: seeded, prefix-stable samples of named sets."""

from __future__ import annotations

import logging
import random
from typing import Mapping, Sequence

from ..errors import DataError
from .disjoint import drop_overlapping
from .query import Query
from .registry import load_set

log = logging.getLogger(__name__)


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
        if exclude and ("=" not in name or name.startswith("hub:")):  # hub pools are ours to draw around
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


__all__ = ["draw_pool"]
