"""Reading JSONL (query files, stage artifacts, training sets) with errors that name file and line,
and writing whole JSONL files atomically (see safetrigger.atomic).

A bad line is a user-fixable problem, so it becomes a one-line DataError ("line 3 of X is not
valid JSON (...); fix or remove the line"), never a traceback. ``repair_tail`` tolerates the
one defect an interrupted append leaves: a partial last line with no newline.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from safetrigger.atomic import atomic_write  # noqa: F401  (re-exported: older imports)
from safetrigger.errors import DataError

log = logging.getLogger(__name__)

# No row of this toolkit comes near this (a 32k-token reply is ~150 k characters): a longer
# line is a broken file, refused by name instead of parsed into memory.
MAX_LINE_CHARS = 16 * 2**20


def read_jsonl(path: str | os.PathLike, repair_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"file not found: {path}; check the path (relative paths start from the current directory)")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason})") from None
    lines = text.split("\n")
    torn = bool(text) and not text.endswith("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS and not (repair_tail and torn and n == len(lines)):
            raise DataError(f"line {n} of {path} is {len(line) / 2**20:.1f} M characters long (limit {MAX_LINE_CHARS // 2**20} M): "
                            f"a file joined without newlines or a binary blob? fix or remove the line")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if repair_tail and torn and n == len(lines):
                log.warning("%s: skipping a partial last line (interrupted write)", path)
                return
            raise DataError(f"line {n} of {path} is not valid JSON ({e.msg}); fix or remove the line") from None
        if not isinstance(obj, dict):
            raise DataError(f"line {n} of {path} is not a JSON object (got {type(obj).__name__}); fix or remove the line")
        yield n, obj


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write a whole JSONL file atomically."""
    with atomic_write(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
