"""One query (prompt) of a set, and the text normalisation used to compare queries.

A `Query` carries where it came from (source, set, split) so that every downstream artifact can
be traced back, and so that overlap between training and evaluation can be checked mechanically.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DataError

CATEGORIES = ("harmful", "jailbreak", "general", "overrefusal", "capability")
RISKY_CATEGORIES = ("harmful", "jailbreak")  # the ones that get the <safe> pass (METHOD.md, pass ②)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


@functools.lru_cache(maxsize=1 << 16)  # the same texts are compared many times (splits, overlap checks)
def normalize_text(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive key: two prompts that differ only in those
    are the same prompt for leakage purposes."""
    return " ".join(_NON_ALNUM.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


@dataclass(frozen=True)
class Query:
    """A prompt plus its provenance. `meta` holds source-specific fields (harm category, answer,
    and for jailbreaks `template_id`, `prompt_id`, `prompt_text`)."""

    id: str
    text: str
    category: str
    source: str
    set_name: str = ""
    split: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DataError(f"query id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise DataError(f"query {self.id!r} has an empty text")
        if self.category not in CATEGORIES:
            raise DataError(f"query {self.id!r} has category {self.category!r}; use one of {', '.join(CATEGORIES)}")

    def __hash__(self) -> int:  # meta is a dict, so the generated hash would fail
        return hash((self.id, self.set_name, self.split))

    @property
    def risky(self) -> bool:
        return self.category in RISKY_CATEGORIES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Query":
        known = {k: d[k] for k in ("id", "text", "category", "source", "set_name", "split") if k in d}
        return cls(**known, meta=dict(d.get("meta") or {}))
