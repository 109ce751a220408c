"""Jailbreak builders for evaluation: many-shot (MSJ) and persuasive paraphrase (PAP).

- **MSJ**, after Anil et al. 2024 ("Many-shot jailbreaking"): ``k`` faux User/Assistant turns in
  which the assistant complies, then the target request, all in one user message. Our shots are
  harmless placeholder demos (``sets/msj_shots_v1.jsonl``), so the attack tests the *format*
  pressure of in-context compliance, not harmful demonstrations; pass ``shots_file`` to use
  your own demos.
- **PAP**, after Zeng et al. 2024 ("How Johnny can persuade LLMs to jailbreak them"): the target
  request wrapped in one of several persuasion techniques (``sets/pap_v1.jsonl``, templates with
  one ``{query}`` slot). The paper paraphrases with an attacker LLM; fixed templates keep the
  benchmark offline and reproducible.

Both are deterministic per target prompt (shots and technique chosen from a hash of the prompt
id), so a prompt gets the same attack whatever set it is drawn in. Each query's meta names the
underlying prompt (``prompt_id``/``prompt_text``) and the wrapper (``template_id``/``template_family``)
so `data.assert_disjoint` can check them against training data. Template files are read and
queries recorded by the same pieces as the jailbreak templates (`data.jailbreak.read_templates`,
`wrapped_query`); ``split`` ('eval' or 'dev') only labels the queries, the prompts decide it.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..data.jailbreak import read_templates, wrapped_query
from ..data.jsonl import read_jsonl, require
from ..data.query import Query
from ..data.splits import unit_hash
from ..errors import ConfigError, DataError

SETS_DIR = Path(__file__).parent / "sets"
MSJ_SHOTS = "msj_shots_v1"
PAP_TEMPLATES = "pap_v1"
QUERY_SLOT = "{query}"
DEFAULT_SHOTS = 8


@dataclass(frozen=True)
class Shot:
    """One faux dialogue turn of a many-shot prompt."""

    id: str
    user: str
    assistant: str


@dataclass(frozen=True)
class PapTemplate:
    """One persuasion technique: a wrapper with one ``{query}`` slot."""

    id: str
    technique: str
    template: str

    def wrap(self, query: str) -> str:
        return self.template.replace(QUERY_SLOT, query)  # not str.format: prompts may hold braces


def _path(file: str | os.PathLike | None, default: str) -> str:
    path = Path(file) if file else SETS_DIR / f"{default}.jsonl"
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    return str(path)


def load_shots(path: str | os.PathLike | None = None) -> list[Shot]:
    """MSJ demos from a JSONL file of ``{"id", "user", "assistant"}`` rows (default: the vendored one)."""
    path = _path(path, MSJ_SHOTS)
    out, seen = [], set()
    for lineno, row in read_jsonl(path):
        sid, user, assistant = (require(row, k, path, lineno) for k in ("id", "user", "assistant"))
        if sid in seen:
            raise DataError(f"line {lineno} of {path} repeats id {sid!r}")
        seen.add(sid)
        out.append(Shot(sid, user.strip(), assistant.strip()))
    if not out:
        raise DataError(f"{path} has no shots")
    return out


def load_pap_templates(path: str | os.PathLike | None = None) -> list[PapTemplate]:
    """PAP techniques from a JSONL file of ``{"id", "technique", "template"}`` rows."""
    path = _path(path, PAP_TEMPLATES)
    out = [PapTemplate(r["id"], r["technique"], r["template"]) for r in read_templates(path, ("technique",), QUERY_SLOT)]
    if not out:
        raise DataError(f"{path} has no templates")
    return out


def render_msj(target: str, shots: Sequence[Shot]) -> str:
    """The many-shot prompt: each shot as a User/Assistant pair, then the target as the last
    User turn (the model's own reply is the next Assistant turn)."""
    turns = [f"User: {s.user}\nAssistant: {s.assistant}" for s in shots]
    return "\n\n".join(turns + [f"User: {target.strip()}"])


def build_msj(prompts: Sequence[Query], shots: int = DEFAULT_SHOTS, shots_file: str | os.PathLike | None = None,
              *, set_name: str = "bench:msj", split: str = "eval") -> list[Query]:
    """One many-shot query per prompt, with ``shots`` demos drawn (without repeats) by prompt id."""
    demos = load_shots(shots_file)
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= len(demos):
        raise ConfigError(f"msj shots must be a whole number from 1 to {len(demos)} (the demos available), "
                          f"got {shots!r}; pass shots_file with more demos for longer prompts")
    source = Path(shots_file).stem if shots_file else MSJ_SHOTS
    out = []
    for p in prompts:
        chosen = random.Random(f"msj:{p.id}").sample(demos, shots)  # str seed: stable across runs
        out.append(wrapped_query(
            p, render_msj(p.text, chosen), qid=f"msj{shots}-{p.id}", source=f"msj+{p.source}",
            template_id=f"msj:{source}", family="msj", set_name=set_name, split=split,
            shots=shots, shot_ids=[s.id for s in chosen], shots_file=source))
    return out


def pick_template(prompt_id: str, templates: Sequence[PapTemplate]) -> PapTemplate:
    """The technique of one prompt: a hash of its id, so it never depends on the other prompts."""
    ordered = sorted(templates, key=lambda t: t.id)
    return ordered[min(int(unit_hash("pap:" + prompt_id) * len(ordered)), len(ordered) - 1)]


def build_pap(prompts: Sequence[Query], templates_file: str | os.PathLike | None = None,
              *, set_name: str = "bench:pap", split: str = "eval") -> list[Query]:
    """One persuasive query per prompt, technique chosen by `pick_template`."""
    templates = load_pap_templates(templates_file)
    source = Path(templates_file).stem if templates_file else PAP_TEMPLATES
    out = []
    for p in prompts:
        t = pick_template(p.id, templates)
        out.append(wrapped_query(
            p, t.wrap(p.text), qid=f"{t.id}-{p.id}", source=f"pap+{p.source}", template_id=t.id, family=t.id,
            set_name=set_name, split=split, technique=t.technique, templates_file=source))
    return out


__all__ = ["DEFAULT_SHOTS", "PapTemplate", "Shot", "build_msj", "build_pap", "load_pap_templates", "load_shots",
           "pick_template", "render_msj"]
