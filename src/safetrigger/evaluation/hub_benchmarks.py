"""Benchmarks that are not vendored (licence or size): XSTest, WildJailbreak eval, HEx-PHI.

Each loader takes a hub id (the default) or a local copy in the dataset's own layout, and fails
with a one-line DataError that says how to get a local copy when neither can be read (e.g.
offline). Ids are content hashes (``xstest-<sha1[:12]>``, ``wildjailbreak-…``, ``hexphi-…``), as
in `data.hub`, so the same prompt has the same id in training pools and benchmarks.

Layouts (what a local copy must look like):

- XSTest (``walledai/XSTest``, split ``test``): columns ``prompt``, ``type``, ``label``
  (``safe``/``unsafe``; without ``label``, types starting with ``contrast`` are the unsafe ones).
- WildJailbreak eval (``allenai/wildjailbreak``, config ``eval``, TSV): ``adversarial`` plus
  ``data_type`` (``adversarial_harmful``/``adversarial_benign``) or ``label`` (1 = harmful).
- HEx-PHI (``LLM-Tuning-Safety/HEx-PHI``, gated): one ``category_<N>.csv`` per harm category,
  one prompt per row, no header. Read with the csv module rather than `open_dataset`: the files
  have no header row (a CSV builder would eat the first prompt as column name) and the
  category lives in the file name.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

from ..data.hub import _require_columns, _rows_to_queries, open_dataset  # shared hub conventions
from ..data.query import Query
from ..errors import DataError

XSTEST_HUB = "walledai/XSTest"
WILDJAILBREAK_HUB = "allenai/wildjailbreak"
HEXPHI_HUB = "LLM-Tuning-Safety/HEx-PHI"
HEXPHI_CATEGORIES = {
    1: "Illegal Activity", 2: "Child Abuse Content", 3: "Hate/Harass/Violence", 4: "Malware",
    5: "Physical Harm", 6: "Economic Harm", 7: "Fraud/Deception", 8: "Adult Content",
    9: "Political Campaigning", 10: "Privacy Violation Activity", 11: "Tailored Financial Advice",
}
_HEXPHI_FILE = re.compile(r"category_(\d+)\.csv$")


def _xstest_unsafe(row: dict[str, Any]) -> bool:
    label = row.get("label")
    if label is not None and str(label).strip():
        return str(label).strip().lower() in ("unsafe", "1", "true")
    return str(row.get("type") or "").startswith("contrast")


def load_xstest(source: str | os.PathLike = XSTEST_HUB, *, unsafe: bool = False,
                cache_dir: str | None = None) -> list[Query]:
    """XSTest safe prompts (over-refusal; ``unsafe=False``) or its unsafe contrast prompts (harmful)."""
    ds = open_dataset(source, split="test", cache_dir=cache_dir)
    _require_columns(ds, str(source), ["prompt"])
    if "label" not in ds.column_names and "type" not in ds.column_names:
        raise DataError(f"{source} has neither a 'label' nor a 'type' column (has: {', '.join(ds.column_names)}); "
                        f"is this XSTest?")
    name = "xstest-unsafe" if unsafe else "xstest"
    return _rows_to_queries(
        ds, source=str(source), field="prompt", category="harmful" if unsafe else "overrefusal", prefix="xstest",
        set_name=f"hub:{name}", split="eval", keep=lambda r: _xstest_unsafe(r) == unsafe,
        meta=lambda r: {("xstest_id" if k == "id" else k): r[k] for k in ("id", "type", "focus", "note", "label")
                        if r.get(k) not in (None, "")})


def _wildjailbreak_kind(row: dict[str, Any]) -> str:
    if row.get("data_type"):
        return str(row["data_type"]).strip()
    return "adversarial_harmful" if str(row.get("label")).strip().lower() in ("1", "true", "harmful") else "adversarial_benign"


def load_wildjailbreak_eval(source: str | os.PathLike = WILDJAILBREAK_HUB, *, harmful: bool = True,
                            cache_dir: str | None = None) -> list[Query]:
    """WildJailbreak's evaluation prompts: adversarial harmful (jailbreak) or adversarial
    benign (over-refusal)."""
    ds = open_dataset(source, config="eval", cache_dir=cache_dir, delimiter="\t", keep_default_na=False)
    _require_columns(ds, str(source), ["adversarial"])
    if "data_type" not in ds.column_names and "label" not in ds.column_names:
        raise DataError(f"{source} has neither a 'data_type' nor a 'label' column (has: {', '.join(ds.column_names)}); "
                        f"is this the WildJailbreak eval set?")
    want = "adversarial_harmful" if harmful else "adversarial_benign"

    def meta(r: dict[str, Any]) -> dict[str, Any]:
        m: dict[str, Any] = {"data_type": _wildjailbreak_kind(r)}
        if r.get("vanilla"):
            m["prompt_text"] = r["vanilla"]
        if r.get("tactics"):
            m["tactics"] = r["tactics"]
        return m

    return _rows_to_queries(
        ds, source=str(source), field="adversarial", category="jailbreak" if harmful else "overrefusal",
        prefix="wildjailbreak", set_name="hub:wildjailbreak-eval" + ("" if harmful else "-benign"), split="eval",
        keep=lambda r: _wildjailbreak_kind(r) == want, meta=meta)


def _hexphi_dir(source: str | os.PathLike, cache_dir: str | None) -> Path:
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text.startswith((".", "/", "~")) or path.suffix == ".csv" or text.count("/") != 1:
        raise DataError(f"HEx-PHI source {source} not found (give a folder of category_<N>.csv files or a hub id)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text, repo_type="dataset", allow_patterns=["*.csv"], cache_dir=cache_dir))
    except Exception as e:  # offline, gated, missing: all fixable by the user
        msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
        raise DataError(f"could not load hub dataset {source} ({msg}); it is gated: accept its terms on the hub, "
                        f"download it (`huggingface-cli download --repo-type dataset {source}`) and pass the "
                        f"local folder instead") from None


def load_hexphi(source: str | os.PathLike = HEXPHI_HUB, *, cache_dir: str | None = None) -> list[Query]:
    """HEx-PHI harmful instructions from a folder (or one file) of ``category_<N>.csv``."""
    path = _hexphi_dir(source, cache_dir)
    files = [path] if path.is_file() else sorted(path.rglob("category_*.csv"))
    files = [f for f in files if _HEXPHI_FILE.search(f.name)]
    if not files:
        raise DataError(f"{source}: no category_<N>.csv files (HEx-PHI has one header-less CSV per category)")
    files.sort(key=lambda f: int(_HEXPHI_FILE.search(f.name).group(1)))
    rows = []
    for f in files:
        n = int(_HEXPHI_FILE.search(f.name).group(1))
        try:
            with open(f, newline="", encoding="utf-8-sig") as fh:
                cells = [r[0] for r in csv.reader(fh) if r]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"could not read {f}: {e}") from None
        rows += [{"text": c, "hex_category": n, "hex_category_name": HEXPHI_CATEGORIES.get(n, f"category {n}")}
                 for c in cells]
    return _rows_to_queries(rows, source=str(source), field="text", category="harmful", prefix="hexphi",
                            set_name="hub:hex-phi", split="eval",
                            meta=lambda r: {"hex_category": r["hex_category"], "hex_category_name": r["hex_category_name"]})


__all__ = ["HEXPHI_HUB", "WILDJAILBREAK_HUB", "XSTEST_HUB", "load_hexphi", "load_wildjailbreak_eval", "load_xstest"]
