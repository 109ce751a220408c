"""Atomic file writes: a file appears at its path whole or not at all.

Everything this toolkit writes in place (manifest, ``<stage>.stats.json``, results tables,
the report page, training settings, lm-eval results) goes through :func:`atomic_write`: the
bytes go to a temporary file in the same directory, are fsynced, and the temporary file is
renamed over the target (``os.replace``, atomic on POSIX and Windows), then the directory is
fsynced so the rename itself survives a power cut. A kill at any moment leaves either the
old file or the new one, never half of one. A failed write (disk full) removes its temporary
file and raises a one-line :class:`~safetrigger.errors.DataError`; the temporary file of a
writer killed before its rename is removed by the next write of the same file.
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from safetrigger.errors import DataError

TMP_MARK = ".tmp"
# Failures of the write itself, which the user fixes (space, permissions); others stay bugs.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.EFBIG}


def tmp_path_for(path: Path) -> Path:
    """The temporary name for ``path``: same directory (so the rename stays on one file
    system), unique per process (so two writers never share a half-written file)."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def leftover_pid(name: str) -> int | None:
    """The writer's pid if ``name`` is one of :func:`tmp_path_for`'s temporary names."""
    head, mark, pid = name.rpartition(TMP_MARK)
    return int(pid) if mark and head.startswith(".") and pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def remove_leftovers(candidates: Iterable[Path]) -> int:
    """Remove those of ``candidates`` that are temporary files of writers killed before their
    rename (a :func:`tmp_path_for` name whose pid no longer runs); a live writer's file and
    every other name are left alone. Returns how many were removed."""
    removed = 0
    for p in candidates:
        pid = leftover_pid(p.name)
        if pid is not None and pid != os.getpid() and p.is_file() and not pid_alive(pid):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file to write ``path`` through; it replaces ``path`` on success.
    ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent.glob(f".{path.name}{TMP_MARK}*"))  # a kill's; e.g. report.html, written without the run-dir lock
    tmp = tmp_path_for(path)
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in WRITE_ERRNOS:
            raise write_error(path, e) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (non-ASCII kept, unknown types as str) atomically."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path: Path, e: OSError) -> DataError:
    """A failed write as a one-line error that says what to do."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"no space left on the device writing {path}; free disk space (or point run_dir elsewhere) "
                         f"and re-run: finished rows are kept")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataError(f"cannot write {path} ({e.strerror}); make the folder writable or choose another output path")
    return DataError(f"cannot write {path} ({e.strerror or e}); check the disk and the path, then re-run")
