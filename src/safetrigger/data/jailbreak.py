"""Jailbreak queries: harmful prompts wrapped in jailbreak templates.

Each harmful prompt of a split is wrapped in exactly one template of the same split (round-robin
over a hash order, so templates are used evenly and the pairing never changes). Sizes therefore
equal the harmful split sizes (hundreds), not prompts x templates (tens of thousands).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import DataError
from .jsonl import read_jsonl, require
from .query import Query
from .splits import unit_hash

SLOT = "{{ prompt }}"


@dataclass(frozen=True)
class Template:
    """A jailbreak wrapper with one `{{ prompt }}` slot. `family` groups near-copies
    (e.g. Dev Mode 1/2/3) so that a split never separates them."""

    id: str
    template: str
    source: str
    family: str
    meta: dict[str, Any] = field(default_factory=dict)

    def wrap(self, prompt: str) -> str:
        return self.template.replace(SLOT, prompt)


def load_templates(path: str | os.PathLike) -> list[Template]:
    """Templates from a JSONL file of `{"id", "template", "source", ["family"], ...}` rows."""
    path = os.fspath(path)
    out, seen = [], set()
    for lineno, row in read_jsonl(path):
        tid, text, source = (require(row, k, path, lineno) for k in ("id", "template", "source"))
        if text.count(SLOT) != 1:
            raise DataError(f"line {lineno} of {path}: template {tid!r} must contain {SLOT!r} exactly once")
        if tid in seen:
            raise DataError(f"line {lineno} of {path} repeats template id {tid!r}")
        seen.add(tid)
        meta = {k: v for k, v in row.items() if k not in ("id", "template", "source", "family")}
        out.append(Template(tid, text, source, str(row.get("family") or tid), meta))
    return out


def build_jailbreaks(prompts: Sequence[Query], templates: Sequence[Template], *,
                     set_name: str, split: str) -> list[Query]:
    """Wrap every prompt in one template; ids `jb-<template>-<prompt>`; meta keeps both sides."""
    if not templates:
        raise DataError(f"no jailbreak templates for {set_name}")
    order = sorted(prompts, key=lambda q: (unit_hash("jb:" + q.id), q.id))  # mixes sources
    tpls = sorted(templates, key=lambda t: t.id)
    out = []
    for i, p in enumerate(order):
        t = tpls[i % len(tpls)]
        out.append(Query(
            id=f"jb-{t.id.removeprefix('jbt-')}-{p.id}", text=t.wrap(p.text), category="jailbreak",
            source=f"{t.source}+{p.source}", set_name=set_name, split=split,
            meta={"template_id": t.id, "template_family": t.family, "prompt_id": p.id,
                  "prompt_text": p.text, "prompt_source": p.source}))
    return out
