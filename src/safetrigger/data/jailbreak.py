"""Jailbreak queries: harmful prompts wrapped in jailbreak templates.

Each harmful prompt of a split is wrapped in exactly one template of the same split, picked by a
hash of prompt and template (`pick_template`): the pairing of a prompt never depends on the other
prompts, and losing a template moves only the prompts it wrapped. Sizes therefore equal the
harmful split sizes (hundreds), not prompts x templates (tens of thousands).

`read_templates` and `wrapped_query` also serve the evaluation attacks (`evaluation.attacks`):
one template-file check and one record of what a wrapper wraps, for every kind of wrapper.
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


def read_templates(path: str | os.PathLike, fields: Sequence[str], slot: str) -> list[dict[str, Any]]:
    """The rows of a JSONL template file, checked line by line: non-empty string `id`,
    `template` and `fields`, `slot` exactly once in the template, ids unique."""
    path = os.fspath(path)
    out, seen = [], set()
    for lineno, row in read_jsonl(path):
        for key in ("id", "template", *fields):
            require(row, key, path, lineno)
        if row["template"].count(slot) != 1:
            raise DataError(f"line {lineno} of {path}: template {row['id']!r} must contain {slot} exactly once")
        if row["id"] in seen:
            raise DataError(f"line {lineno} of {path} repeats id {row['id']!r}")
        seen.add(row["id"])
        out.append(row)
    return out


def load_templates(path: str | os.PathLike) -> list[Template]:
    """Templates from a JSONL file of `{"id", "template", "source", ["family"], ...}` rows."""
    return [Template(r["id"], r["template"], r["source"], str(r.get("family") or r["id"]),
                     {k: v for k, v in r.items() if k not in ("id", "template", "source", "family")})
            for r in read_templates(path, ("source",), SLOT)]


def wrapped_query(prompt: Query, text: str, *, qid: str, source: str, template_id: str, family: str,
                  set_name: str, split: str, **meta: Any) -> Query:
    """A jailbreak query around `prompt`. Its meta names the wrapper and the prompt inside, so
    `assert_disjoint` compares both with other sets."""
    return Query(id=qid, text=text, category="jailbreak", source=source, set_name=set_name, split=split,
                 meta={"template_id": template_id, "template_family": family, **meta,
                       "prompt_id": prompt.id, "prompt_text": prompt.text, "prompt_source": prompt.source})


def pick_template(prompt_id: str, templates: Sequence[Template]) -> Template:
    """The template of one prompt: highest hash of (prompt, template), so the choice is spread
    evenly on average and stays put when other prompts or templates come and go."""
    return max(templates, key=lambda t: (unit_hash(f"jb:{prompt_id}:{t.id}"), t.id))


def build_jailbreaks(prompts: Sequence[Query], templates: Sequence[Template], *,
                     set_name: str, split: str) -> list[Query]:
    """Wrap every prompt in one template; ids `jb-<template>-<prompt>`; meta keeps both sides."""
    if not templates:
        raise DataError(f"no jailbreak templates for {set_name}")
    out = []
    for p in sorted(prompts, key=lambda q: (unit_hash("jb:" + q.id), q.id)):  # mixes sources
        t = pick_template(p.id, templates)
        out.append(wrapped_query(p, t.wrap(p.text), qid=f"jb-{t.id.removeprefix('jbt-')}-{p.id}",
                                 source=f"{t.source}+{p.source}", template_id=t.id, family=t.family,
                                 set_name=set_name, split=split))
    return out
