"""The check that training (or tuning) never sees evaluation data, and the filter that enforces it.

Two queries overlap when they share an id, a normalised text, an underlying prompt (what a
jailbreak wraps) or a jailbreak template (id or family). Sides are set names (resolved through
`registry`) and/or lists of `Query`.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

from ..errors import DataError
from .query import Query, normalize_text
from .registry import load_set

QuerySets = Union[str, Iterable[Union[str, Query, Sequence[Query]]]]


def _query_keys(q: Query) -> tuple[set[str], set[str], set[str]]:
    """ids, normalised texts and templates of one query, including what a jailbreak wraps:
    its underlying prompt (id and text) and its template (id and family)."""
    m = q.meta
    ids = {q.id} | ({m["prompt_id"]} if m.get("prompt_id") else set())
    texts = {normalize_text(q.text)} | ({normalize_text(m["prompt_text"])} if m.get("prompt_text") else set())
    templates = {str(m[k]) for k in ("template_id", "template_family") if m.get(k)}
    return ids, texts, templates


def _queries(sets: QuerySets) -> Iterable[Query]:
    for s in [sets] if isinstance(sets, str) else sets:  # also a bare name or a flat query list
        if isinstance(s, Query):
            yield s
        else:
            yield from (load_set(s) if isinstance(s, str) else s)


def _keys(sets: QuerySets) -> tuple[set[str], set[str], set[str]]:
    ids: set[str] = set()
    texts: set[str] = set()
    templates: set[str] = set()
    for q in _queries(sets):
        i, t, tp = _query_keys(q)
        ids |= i
        texts |= t
        templates |= tp
    return ids, texts, templates


def _show(items: set[str], limit: int = 5) -> str:
    shown = sorted(items)[:limit]
    more = f", +{len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(repr(x[:60]) for x in shown) + more


def assert_disjoint(train_sets: QuerySets, eval_sets: QuerySets, templates: bool = True,
                    what: str = "training and evaluation sets") -> None:
    """Raise DataError if any training query shares an id, a normalised text, an underlying
    prompt or a jailbreak template (family) with any evaluation query. Each side is a set name,
    a list of set names and/or lists of `Query` (e.g. user or hub sets), or a flat `Query` list.
    ``templates=False`` allows shared templates (two training pools may use the same wrappers)."""
    tr, ev = _keys(train_sets), _keys(eval_sets)
    kinds = ("ids", "texts", "templates")[: 3 if templates else 2]
    parts = [f"{len(both)} {kind} ({_show(both)})" for kind, both in zip(kinds, (a & b for a, b in zip(tr, ev))) if both]
    if parts:
        raise DataError(f"{what} overlap: " + "; ".join(parts) + "; drop the shared queries from one side")


def drop_overlapping(queries: Sequence[Query], against: QuerySets, templates: bool = True) -> list[Query]:
    """`queries` without those that `assert_disjoint` would flag against `against` (e.g. hub
    training prompts that also occur in an evaluation benchmark)."""
    ids, texts, tmpl = _keys(against)
    if not templates:
        tmpl = set()
    out = []
    for q in queries:
        i, t, tp = _query_keys(q)
        if not (i & ids or t & texts or tp & tmpl):
            out.append(q)
    return out
