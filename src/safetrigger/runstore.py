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

Shards (``safetrigger generate CONFIG --shard i/n``): n processes split a stage's pending rows by a
stable hash of their key (:meth:`Shard.owns`), so each row has exactly one owner whatever the
order or the machine. Each process appends only to its own file, ``<stage>.shard-i-of-n.jsonl``
(one writer per file: no locking of appends), and holds an exclusive lock on
``<stage>.shard-i-of-n.lock`` while it runs (the kernel drops it when the process dies, even by
SIGKILL). Every reader sees the stage file plus all shard files, merged by id (a row present
twice, e.g. after a change of n, counts once). The unsharded run of the stage, afterwards, does
any rows still pending, then folds each shard file whose lock it can take into ``<stage>.jsonl``
and writes the stats; a shard still running keeps its file. Manifest updates take
``manifest.lock``, so concurrent shards do not lose each other's entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable

from safetrigger import timestamps
from safetrigger.atomic import WRITE_ERRNOS, write_error, write_json
from safetrigger.errors import ConfigError, DataError, SafeTriggerError
from safetrigger.jsonl import read_jsonl
from safetrigger.locks import file_lock, hold_file_lock, try_file_lock

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ["safetrigger", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm"]


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count`` splitting a stage's pending rows (``--shard index/count``)."""

    index: int
    count: int

    @classmethod
    def parse(cls, spec: str | None) -> "Shard | None":
        """``"0/2"`` -> Shard(0, 2); None -> None (unsharded)."""
        if spec is None:
            return None
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
        if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
            raise ConfigError(f"--shard must be i/n with 0 <= i < n (e.g. --shard 0/2), got {spec!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, key: str) -> bool:
        """Stable over processes, machines and Python versions (sha256, not hash())."""
        return int(hashlib.sha256(str(key).encode()).hexdigest()[:16], 16) % self.count == self.index

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        return f".shard-{self.index}-of-{self.count}"


_SHARD_FILE = re.compile(r"\.shard-(\d+)-of-(\d+)\.jsonl$")


class StageFile:
    """Append-only JSONL of one stage, keyed by the ``id`` field; with a ``shard``, this process
    writes its own shard file and reads the merged view of all of them."""

    def __init__(self, path: Path, shard: Shard | None = None):
        self.path = Path(path)  # the stage file (the merged result)
        self.shard = shard
        self._ids: set[str] | None = None

    @property
    def write_path(self) -> Path:
        """Where this process appends: its shard file, or the stage file itself."""
        return self.path.with_name(self.path.stem + self.shard.suffix + ".jsonl") if self.shard else self.path

    def shard_files(self) -> list[Path]:
        if not self.path.parent.is_dir():
            return []
        return sorted(p for p in self.path.parent.glob(self.path.stem + ".shard-*-of-*.jsonl") if _SHARD_FILE.search(p.name))

    def owns(self, key: str) -> bool:
        """Whether this process does the row keyed ``key`` (always, unsharded)."""
        return self.shard is None or self.shard.owns(key)

    def _repair(self, path: Path) -> None:
        """Cut a torn last line left by a kill mid-write, so appends start on a fresh line (only
        ever on this process's own file: another shard's tail may be a write in flight)."""
        if not path.is_file():
            return
        with path.open("rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                log.warning("%s: removing %d bytes of a partial last line (interrupted write)", path, len(data) - keep)
                f.truncate(keep)

    def rows(self) -> list[dict]:
        """The stage file's rows, then each shard file's rows not seen before (merged by id)."""
        files = [p for p in [self.path, *self.shard_files()] if p.is_file()]
        if len(files) <= 1:
            return [row for _, row in read_jsonl(files[0], repair_tail=True)] if files else []
        out, seen, repeated = [], set(), 0
        for path in files:
            for n, row in read_jsonl(path, repair_tail=True):
                if "id" not in row:
                    raise DataError(f"row {n} of {path} has no 'id' field")
                rid = str(row["id"])
                if rid in seen:
                    repeated += 1
                    continue
                seen.add(rid)
                out.append(row)
        if repeated:
            log.warning("%s: %d row(s) present in more than one shard file counted once", self.path.name, repeated)
        return out

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
        target = self.write_path
        target.parent.mkdir(parents=True, exist_ok=True)
        self._repair(target)
        # One write of whole lines: a kill leaves at most a torn last line, cut off by _repair.
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in fresh).encode("utf-8")
        try:
            with target.open("ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                self._ids = None  # the rows may be partly on disk: re-read (and repair) next time
                raise write_error(target, e) from None
            raise
        return len(fresh)

    def merge_shards(self) -> int:
        """Fold every finished shard file into the stage file (rows it lacks, then the shard file
        is removed); a shard whose process still holds its lock is left alone. Returns rows moved.
        A kill between the append and the removal only leaves rows that the merged view and the
        next merge count once."""
        if self.shard is not None:
            raise SafeTriggerError("a shard cannot merge the others: run the stage without --shard to merge")
        moved = 0
        for path in self.shard_files():
            with try_file_lock(path.with_suffix(".lock")) as free:
                if not free:
                    log.warning("%s: its shard is still running; merge again once it is done", path.name)
                    continue
                done = {str(r["id"]) for _, r in read_jsonl(self.path, repair_tail=True)} if self.path.is_file() else set()
                rows = [r for _, r in read_jsonl(path, repair_tail=True) if str(r["id"]) not in done]
                if rows:
                    self._repair(self.path)
                    with self.path.open("a", encoding="utf-8") as f:
                        for row in rows:
                            f.write(json.dumps(row, ensure_ascii=False) + "\n")
                        f.flush()
                        os.fsync(f.fileno())
                moved += len(rows)
                path.unlink()
            path.with_suffix(".lock").unlink(missing_ok=True)
        self._ids = None
        return moved


class RunStore:
    """A run directory: stage files, per-stage stats, and the manifest."""

    def __init__(self, run_dir: str | Path, shard: Shard | None = None):
        self.dir = Path(run_dir)
        self.shard = shard
        self._shard_locks: dict[str, int] = {}  # stage -> descriptor of its lock, held while this shard runs it

    def stage(self, name: str) -> StageFile:
        return StageFile(self.dir / f"{name}.jsonl", self.shard)

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
        if self.shard is not None:
            self._hold_shard_lock(name)
        with file_lock(self.dir / "manifest.lock"):
            self._begin_stage(name, config, fingerprint_of, extra)

    def _hold_shard_lock(self, name: str) -> None:
        """Take this shard's lock for the stage (released at finish, or by the kernel on a kill)."""
        if name in self._shard_locks:
            return
        path = self.dir / f"{name}{self.shard.suffix}.lock"
        fd = hold_file_lock(path)
        if fd is None:
            raise SafeTriggerError(f"shard {self.shard.label} of stage '{name}' is already running in {self.dir} "
                                   f"(another process holds {path.name})")
        self._shard_locks[name] = fd

    def _begin_stage(self, name: str, config: dict, fingerprint_of: dict, extra: dict | None) -> None:
        m = self.manifest()
        fp = fingerprint(fingerprint_of)
        old = m.get("stages", {}).get(name)
        if old and old.get("fingerprint") and old["fingerprint"] != fp:
            changed = sorted(k for k in set(old.get("settings", {})) | set(fingerprint_of) if old.get("settings", {}).get(k) != fingerprint_of.get(k))
            raise SafeTriggerError(
                f"{self.dir} already holds stage '{name}' made with other settings (changed: {', '.join(changed) or '?'}); "
                f"use a new run_dir, or delete {self.stage(name).path.name} to redo it"
            )
        m.setdefault("created", timestamps.now())
        m["config"] = config
        m["versions"] = versions()
        m["git"] = git_sha()
        stage = m.setdefault("stages", {}).setdefault(name, {})
        if self.shard is not None:  # the stage's own status is the unsharded run's to set
            stage.update({"fingerprint": fp, "settings": fingerprint_of})
            stage.setdefault("shards", {})[self.shard.label] = {"status": "running", "started": timestamps.now()}
        else:
            stage.update({"status": "running", "started": timestamps.now(), "fingerprint": fp, "settings": fingerprint_of})
        if extra:
            stage.update(extra)
        self._write_manifest(m)

    def update_stage(self, name: str, **fields) -> None:
        """Record facts learned while a stage runs (e.g. the loaded model's identity)."""
        with file_lock(self.dir / "manifest.lock"):
            m = self.manifest()
            m.setdefault("stages", {}).setdefault(name, {}).update(fields)
            self._write_manifest(m)

    def finish_stage(self, name: str, stats: dict) -> None:
        """Stats + status done; a shard records only its own part (the stats of a stage are the
        merged run's, written by the unsharded run that folds the shard files in)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.shard is not None:
            with file_lock(self.dir / "manifest.lock"):
                m = self.manifest()
                shards = m.setdefault("stages", {}).setdefault(name, {}).setdefault("shards", {})
                shards[self.shard.label] = {**shards.get(self.shard.label, {}), "status": "done", "finished": timestamps.now(),
                                            "rows": stats.get("rows")}
                self._write_manifest(m)
            fd = self._shard_locks.pop(name, None)
            if fd is not None:
                os.close(fd)  # releases the flock
            return
        moved = self.stage(name).merge_shards()
        if moved:
            log.info("%s: %d rows of shard files merged into %s.jsonl", name, moved, name)
        write_json(self.stats_path(name), stats)
        with file_lock(self.dir / "manifest.lock"):
            m = self.manifest()
            stage = m.setdefault("stages", {}).setdefault(name, {})
            stage.update({"status": "done", "finished": timestamps.now(), "rows": stats.get("rows"), "peak_rss_mib": peak_rss_mib()})
            self._write_manifest(m)


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far, in MiB (``ru_maxrss``; None where the
    platform lacks it). A high-water mark: in one ``safetrigger run`` the stage whose value
    jumps is the one that set the peak."""
    try:
        import resource
    except ImportError:
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)  # macOS reports bytes


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

