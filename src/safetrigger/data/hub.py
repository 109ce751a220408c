"""The paper's query pools, for users with Hugging Face Hub access (or a downloaded copy).

Each loader takes a hub id or a local file/folder (jsonl, json, parquet, csv, tsv) in the hub
dataset's own schema and returns `Query` rows. Ids are content hashes
(`ultrafeedback-<sha1[:12]>`, `pku-…`, `wildjailbreak-…`), so
they are stable whatever the row order, and repeated prompts collapse to one query.

Licences (not vendored here; check before redistributing derived data): UltraFeedback MIT,
PKU-SafeRLHF CC-BY-NC-4.0, WildJailbreak ODC-BY (gated: accept its terms on the hub first).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import DataError
from .query import Query

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}


def _local_files(path: Path) -> tuple[str, list[str], dict[str, Any]]:
    files = sorted(p for p in path.rglob("*") if p.suffix in _BUILDERS) if path.is_dir() else [path]
    if not files or files[0].suffix not in _BUILDERS:
        raise DataError(f"{path}: no .jsonl/.json/.parquet/.csv/.tsv data file there")
    kinds = {_BUILDERS[p.suffix] for p in files}
    if len(kinds) > 1 or len({p.suffix for p in files} & {".csv", ".tsv"}) > 1:
        raise DataError(f"{path}: use one format per folder (.jsonl/.json, .parquet, .csv or .tsv)")
    extra = {"delimiter": "\t", "keep_default_na": False} if files[0].suffix == ".tsv" else {}
    return kinds.pop(), [str(p) for p in files], extra


def open_dataset(source: str | os.PathLike, *, config: str | None = None, split: str = "train",
                 cache_dir: str | None = None, **hub_kwargs: Any):
    """`datasets.Dataset` from a local path or a hub id; any failure becomes a DataError that
    says how to get a local copy."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise DataError(f"the 'datasets' package is needed to read {source}: pip install datasets") from e
    path = Path(source).expanduser()
    if not path.exists() and (path.suffix in _BUILDERS or str(source).startswith((".", "/", "~"))):
        raise DataError(f"dataset file {source} not found")
    try:
        if path.exists():
            builder, files, extra = _local_files(path)
            return datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir, **extra)
        return datasets.load_dataset(str(source), config, split=split, cache_dir=cache_dir, **hub_kwargs)
    except DataError:
        raise
    except Exception as e:  # offline, gated, missing, malformed: all fixable by the user
        msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
        if path.exists():
            raise DataError(f"could not read {source} ({msg}); check that it is jsonl/json/parquet/csv/tsv "
                            f"in the dataset's own schema") from None
        raise DataError(f"could not load hub dataset {source} ({msg}); download it "
                        f"(e.g. `huggingface-cli download --repo-type dataset {source}`) and pass the local "
                        f"path (jsonl/json/parquet/csv/tsv) instead") from None


def _rows_to_queries(rows: Iterable[dict[str, Any]], *, source: str, field: str, category: str, prefix: str,
                     set_name: str, split: str = "train", keep: Callable[[dict[str, Any]], bool] = lambda r: True,
                     meta: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: {},
                     limit: int | None = None) -> list[Query]:
    out, seen = [], set()
    for i, row in enumerate(rows):
        if field not in row:
            raise DataError(f"{source}: row {i} has no {field!r} field (columns: {', '.join(row)}); "
                            f"is this the right dataset?")
        text = row[field]
        if not isinstance(text, str) or not text.strip() or not keep(row):
            continue
        qid = f"{prefix}-{hashlib.sha1(text.strip().encode('utf-8')).hexdigest()[:12]}"
        if qid in seen:
            continue
        seen.add(qid)
        out.append(Query(qid, text.strip(), category, prefix, set_name=set_name, split=split, meta=meta(row)))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{source}: no usable rows for {set_name}")
    return out


def _require_columns(ds, source: str, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c not in ds.column_names]
    if missing:
        raise DataError(f"{source} lacks column(s) {', '.join(missing)} (has: {', '.join(ds.column_names)}); "
                        f"is this the right dataset?")


def load_ultrafeedback(source: str | os.PathLike = "openbmb/UltraFeedback", *, limit: int | None = None,
                       cache_dir: str | None = None) -> list[Query]:
    """General queries: the `instruction` of each UltraFeedback row (METHOD.md stage 1 pool)."""
    ds = open_dataset(source, cache_dir=cache_dir)
    _require_columns(ds, str(source), ["instruction"])
    return _rows_to_queries(ds, source=str(source), field="instruction", category="general", prefix="ultrafeedback",
                            set_name="hub:ultrafeedback", limit=limit,
                            meta=lambda r: {"origin": r.get("source", "")})


def load_pku_saferlhf(source: str | os.PathLike = "PKU-Alignment/PKU-SafeRLHF", *, split: str = "train",
                      both_unsafe: bool = False, limit: int | None = None,
                      cache_dir: str | None = None) -> list[Query]:
    """Harmful queries: PKU-SafeRLHF prompts for which a response was labelled unsafe (both
    responses if `both_unsafe`), i.e. prompts that actually elicit harm."""
    ds = open_dataset(source, split=split, cache_dir=cache_dir)
    _require_columns(ds, str(source), ["prompt", "is_response_0_safe", "is_response_1_safe"])

    def unsafe(r: dict[str, Any]) -> bool:
        flags = [_is_false(r["is_response_0_safe"]), _is_false(r["is_response_1_safe"])]
        return all(flags) if both_unsafe else any(flags)

    return _rows_to_queries(ds, source=str(source), field="prompt", category="harmful", prefix="pku",
                            set_name=f"hub:pku-saferlhf:{split}", split="eval" if split == "test" else "train",
                            keep=unsafe, limit=limit,
                            meta=lambda r: {"origin": r.get("prompt_source", "")})


def load_wildjailbreak(source: str | os.PathLike = "allenai/wildjailbreak", *, split: str = "train",
                       limit: int | None = None, cache_dir: str | None = None) -> list[Query]:
    """Jailbreak queries: `adversarial` prompts with `data_type == "adversarial_harmful"`.
    `split` is the hub config: 'train' (stage 1/2 pools) or 'eval' (the 2000-prompt benchmark).
    When present, `vanilla` (the underlying harmful request) goes to meta["prompt_text"], so
    `assert_disjoint` also compares underlying requests."""
    if split not in ("train", "eval"):
        raise DataError(f"WildJailbreak split must be 'train' or 'eval', got {split!r}")
    # On the hub, 'train' and 'eval' are configs (TSV files), each with a single 'train' split.
    ds = open_dataset(source, config=split, cache_dir=cache_dir, delimiter="\t", keep_default_na=False)
    _require_columns(ds, str(source), ["adversarial", "data_type"])

    def meta(r: dict[str, Any]) -> dict[str, Any]:
        m = {"prompt_text": r["vanilla"]} if r.get("vanilla") else {}
        if r.get("tactics"):
            m["tactics"] = r["tactics"]
        return m

    return _rows_to_queries(ds, source=str(source), field="adversarial", category="jailbreak", prefix="wildjailbreak",
                            set_name=f"hub:wildjailbreak:{split}", split=split,
                            keep=lambda r: r["data_type"] == "adversarial_harmful", meta=meta, limit=limit)


def _is_false(v: Any) -> bool:
    """Safety flags arrive as bools (json/parquet) or strings (csv)."""
    return v is False or (isinstance(v, str) and v.strip().lower() in ("false", "0"))


STAR1 = "UCSC-VLAA/STAR-1"


def load_star1(source: str | os.PathLike = STAR1, *, limit: int | None = None,
               cache_dir: str | None = None) -> list[dict[str, Any]]:
    """SFT rows of STAR-1 (1K deliberative safety-reasoning examples, Apache-2.0): each row's
    ``question`` and ``response`` (``<think>reasoning</think> answer``), split into
    ``{"id", "query", "think", "answer", "category", "source"}``. Rows whose response does not
    parse into closed reasoning + a non-empty answer are skipped; ids are content hashes
    (``star1-<sha1[:12]>`` of the question), repeated questions collapse to one row."""
    from safetrigger.response_format import ERROR_ISSUES, parse

    ds = open_dataset(source, cache_dir=cache_dir)
    _require_columns(ds, str(source), ["question", "response"])
    out, seen, bad = [], set(), 0
    for row in ds:
        q, resp = row["question"], row["response"]
        if not isinstance(q, str) or not q.strip() or not isinstance(resp, str):
            bad += 1
            continue
        p = parse(resp)
        if not p.think_closed or not p.answer or set(p.issues) & ERROR_ISSUES or p.safe is not None:
            bad += 1
            continue
        qid = f"star1-{hashlib.sha1(q.strip().encode('utf-8')).hexdigest()[:12]}"
        if qid in seen:
            continue
        seen.add(qid)
        out.append({"id": qid, "query": q.strip(), "think": p.think, "answer": p.answer,
                    "category": str(row.get("category") or ""), "source": "star1"})
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{source}: no usable STAR-1 rows ({bad} without a closed <think> block and an answer)")
    return out


# ---------------------------------------------------------------------------- named hub pools

HUB_PREFIX = "hub:"
HUB_POOLS: dict[str, tuple[Callable[..., list[Query]], str]] = {
    # set name (after "hub:") -> (loader, default hub id). The loaders' own set_name values match.
    "ultrafeedback": (load_ultrafeedback, "openbmb/UltraFeedback"),
    "pku-saferlhf": (load_pku_saferlhf, "PKU-Alignment/PKU-SafeRLHF"),
    "wildjailbreak": (load_wildjailbreak, "allenai/wildjailbreak"),
}


def parse_hub_pool(name: str) -> tuple[str, str]:
    """``"hub:wildjailbreak"`` -> ``("wildjailbreak", "allenai/wildjailbreak")``; ``"hub:NAME=SOURCE"``
    takes a local copy (file/folder in the dataset's own schema) or another hub id instead."""
    spec = name[len(HUB_PREFIX):] if name.startswith(HUB_PREFIX) else name
    key, _, source = spec.partition("=")
    key = key.strip()
    if key not in HUB_POOLS:
        raise DataError(f"unknown hub pool {name!r}; hub pools: {', '.join(HUB_PREFIX + k for k in HUB_POOLS)} "
                        f"(add =SOURCE for a local copy, e.g. hub:ultrafeedback=/data/uf.parquet)")
    return key, source.strip() or HUB_POOLS[key][1]


@functools.lru_cache(maxsize=8)
def _hub_pool(key: str, source: str) -> tuple[Query, ...]:
    return tuple(HUB_POOLS[key][0](source))  # a pool is drawn twice per run (SFT + DPO): read once


def load_hub_pool(name: str) -> list[Query]:
    """The queries of a hub pool set (see :data:`HUB_POOLS`), a fresh list each call."""
    return list(_hub_pool(*parse_hub_pool(name)))
