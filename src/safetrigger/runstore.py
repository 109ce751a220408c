"""The run store: one directory per run, one append-only JSONL per stage, one manifest.

Layout::

    runs/demo/
      manifest.json          config, library versions, git sha, model identity, per-stage status
      generate.jsonl         one row per sample, keyed by a stable "id"
      generate.stats.json    written when the stage finishes

Resuming: a stage asks :meth:`StageFile.done_ids` and skips those ids, then appends. Rows are
flushed and fsynced per batch, so a kill loses at most the batch in flight. A kill in the middle
of a write leaves a partial last line; it is cut off (and counted in the log) when the file is
next opened — never silently kept, never a crash. A malformed line anywhere else is an error
naming the line, since that means the file was edited or corrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Iterable

from safetrigger.errors import DataError, SafeTriggerError
from safetrigger.atomic import WRITE_ERRNOS, write_error, write_json
from safetrigger.jsonl import read_jsonl

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ["safetrigger", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm"]


class StageFile:
    """Append-only JSONL of one stage, keyed by the ``id`` field."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._ids: set[str] | None = None

    def _repair(self) -> None:
        """Cut a torn last line left by a kill mid-write, so appends start on a fresh line."""
        if not self.path.is_file():
            return
        with self.path.open("rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                log.warning("%s: removing %d bytes of a partial last line (interrupted write)", self.path, len(data) - keep)
                f.truncate(keep)

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [row for _, row in read_jsonl(self.path, repair_tail=True)]

    def done_ids(self) -> set[str]:
        if self._ids is None:
            self._ids = set()
            for n, row in enumerate(self.rows(), 1):
                if "id" not in row:
                    raise DataError(f"row {n} of {self.path} has no 'id' field; the file was edited or corrupted: restore it, or delete it to redo the stage")
                self._ids.add(str(row["id"]))
        return self._ids

    def append(self, rows: Iterable[dict]) -> int:
        """Append rows whose ids are new; returns how many were written."""
        done = self.done_ids()
        fresh = []
        for row in rows:
            rid = str(row["id"])
            if rid in done:
                raise SafeTriggerError(f"duplicate id {rid!r} in {self.path.name}: the stage produced it twice")
            done.add(rid)
            fresh.append(row)
        if not fresh:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        # One write of whole lines: a kill leaves at most a torn last line, cut off by _repair.
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in fresh).encode("utf-8")
        try:
            with self.path.open("ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                self._ids = None  # the rows may be partly on disk: re-read (and repair) next time
                raise write_error(self.path, e) from None
            raise
        return len(fresh)


class RunStore:
    """A run directory: stage files, per-stage stats, and the manifest."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    def stage(self, name: str) -> StageFile:
        return StageFile(self.dir / f"{name}.jsonl")

    def stats_path(self, name: str) -> Path:
        return self.dir / f"{name}.stats.json"

    def is_done(self, name: str) -> bool:
        return self.manifest().get("stages", {}).get(name, {}).get("status") == "done"

    # ---------------------------------------------------------------- manifest

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def manifest(self) -> dict:
        if not self.manifest_path.is_file():
            return {}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{self.manifest_path} is not valid JSON ({e.msg}); restore it or start a new run_dir") from None

    def _write_manifest(self, m: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.manifest_path, m)

    def begin_stage(self, name: str, config: dict, fingerprint_of: dict, extra: dict | None = None) -> None:
        """Record the stage's start. ``fingerprint_of`` holds the settings that determine its
        output; resuming with different ones would mix two experiments in one file, so refuse."""
        m = self.manifest()
        fp = fingerprint(fingerprint_of)
        old = m.get("stages", {}).get(name)
        if old and old.get("fingerprint") and old["fingerprint"] != fp:
            changed = sorted(k for k in set(old.get("settings", {})) | set(fingerprint_of) if old.get("settings", {}).get(k) != fingerprint_of.get(k))
            raise SafeTriggerError(
                f"{self.dir} already holds stage '{name}' made with other settings (changed: {', '.join(changed) or '?'}); "
                f"use a new run_dir, or delete {self.stage(name).path.name} to redo it"
            )
        m.setdefault("created", _now())
        m["config"] = config
        m["versions"] = versions()
        m["git"] = git_sha()
        stage = m.setdefault("stages", {}).setdefault(name, {})
        stage.update({"status": "running", "started": _now(), "fingerprint": fp, "settings": fingerprint_of})
        if extra:
            stage.update(extra)
        self._write_manifest(m)

    def update_stage(self, name: str, **fields) -> None:
        """Record facts learned while a stage runs (e.g. the loaded model's identity)."""
        m = self.manifest()
        m.setdefault("stages", {}).setdefault(name, {}).update(fields)
        self._write_manifest(m)

    def finish_stage(self, name: str, stats: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.stats_path(name), stats)
        m = self.manifest()
        stage = m.setdefault("stages", {}).setdefault(name, {})
        stage.update({"status": "done", "finished": _now(), "rows": stats.get("rows")})
        self._write_manifest(m)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in TRACKED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_sha() -> str | None:
    """Commit of the safetrigger checkout in use (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
