"""Reading JSONL query files (vendored or user-supplied) with errors that name file and line.

A bad line anywhere in a data file is a user-fixable problem, so it becomes a one-line
`DataError` naming file and line (see safetrigger.jsonl), never a traceback.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import DataError
from ..jsonl import read_jsonl  # noqa: F401  (re-exported: data modules read through it)
from .query import CATEGORIES, Query

TEXT_FIELDS = ("text", "prompt")  # accepted names for the prompt in user files


def require(obj: dict[str, Any], key: str, path: str, lineno: int) -> str:
    """The non-empty string field `key` of a row, or a DataError naming line and field."""
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"line {lineno} of {path} has no non-empty string field {key!r}; add it or remove the line")
    return value


def load_jsonl_queries(path: str | os.PathLike, category: str, *, source: str | None = None,
                       split: str = "user") -> list[Query]:
    """Queries from a user JSONL file: one object per line with `text` (or `prompt`); optional
    `id` (default `<file stem>-<line>`), every other field goes to `meta`. Ids must be unique."""
    path = os.fspath(path)
    if category not in CATEGORIES:
        raise DataError(f"category {category!r} for {path} is not one of {', '.join(CATEGORIES)}")
    stem = os.path.splitext(os.path.basename(path))[0]
    source = source or stem
    out: list[Query] = []
    seen: dict[str, int] = {}
    for lineno, obj in read_jsonl(path):
        key = next((k for k in TEXT_FIELDS if k in obj), None)
        if key is None:
            raise DataError(f"line {lineno} of {path} has no 'text' or 'prompt' field; add one or remove the line")
        text = require(obj, key, path, lineno)
        qid = obj.get("id", f"{stem}-{lineno:05d}")
        if not isinstance(qid, (str, int)) or qid == "":
            raise DataError(f"line {lineno} of {path} has an invalid 'id' {qid!r}; use a non-empty string")
        qid = str(qid)
        if qid in seen:
            raise DataError(f"line {lineno} of {path} repeats id {qid!r} from line {seen[qid]}; ids must be unique")
        seen[qid] = lineno
        meta = {k: v for k, v in obj.items() if k not in ("id", key, "category", "source")}
        out.append(Query(id=qid, text=text, category=category, source=source,
                         set_name=f"file:{path}", split=split, meta=meta))
    if not out:
        raise DataError(f"query file {path} has no rows; add queries (one JSON object per line) or drop it from the pool")
    return out
