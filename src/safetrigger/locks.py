"""Locks between processes: one writer per run dir, one builder per cache entry.

* :func:`run_dir_lock` — every ``safetrigger`` command that writes a run dir holds
  ``<run_dir>/.safetrigger.lock`` while it runs. A second process refuses at once with the
  holder's pid, host and command line. The lock is an ``flock`` on that file, so the kernel
  drops it when its holder dies, even by SIGKILL; the file still names the dead holder, and the
  next process says it is taking over. Re-entrant within one process (``run`` → stages → report).
* :func:`build_once` — a cache entry (the GGUF conversion of the embedded model, a merged
  checkpoint) is built by one process while the others wait, into a per-process temporary
  folder renamed into place, so several processes started at once (``accelerate launch``,
  a sweep) never read or write a half-built directory.

Where ``flock`` is missing (Windows, some network file systems) the run-dir lock falls back
to checking whether the recorded pid is alive on this host.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from safetrigger import timestamps
from safetrigger.atomic import pid_alive, remove_leftovers
from safetrigger.errors import SafeTriggerError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = ".safetrigger.lock"

# path -> [fd, depth]: the locks this process holds (flock is per open file, so a second open
# by the same process would block itself).
_held: dict[str, list] = {}


class RunDirBusy(SafeTriggerError):
    """Another live process holds the run dir."""


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "/safetrigger")):
        argv[0] = "safetrigger"
    return shlex.join(argv)


def _holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
            "started": timestamps.now()}


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        info = json.loads(data.decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def _write_holder(fd: int, info: dict | None) -> None:
    os.ftruncate(fd, 0)
    if info:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode("utf-8"))
    os.fsync(fd)


def sweep_leftovers(folder: Path) -> int:
    """Remove the temporary files of atomic writes (``.NAME.tmpPID``) whose writer no longer
    runs: what a kill between writing and renaming leaves. Run by whoever takes over a dead
    holder's lock; a live process's files (another shard's) are left alone. Returns how many."""
    removed = remove_leftovers(folder.rglob(".*"))
    if removed:
        log.warning("%s: removed %d temporary file(s) left by interrupted writes", folder, removed)
    return removed


def _describe(info: dict) -> str:
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    since = f", since {info['started']}" if info.get("started") else ""
    return f"pid {info.get('pid', '?')}{where} (`{info.get('command') or '?'}`{since})"


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: held by another process; None: this file system cannot flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


@contextmanager
def run_dir_lock(run_dir: str | os.PathLike, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold the run dir's lock for the block; raise :class:`RunDirBusy` if another process has it.
    ``name``: another lock file in the run dir (``--shard i/n`` processes each hold their own,
    so that n shards run side by side while a second copy of one shard is refused)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        got = _try_flock(fd)
        old = _read_holder(fd)
        alive = old.get("pid") not in (None, os.getpid()) and old.get("host") in (None, socket.gethostname()) and pid_alive(int(old["pid"]))
        if got is False or (got is None and alive):
            raise RunDirBusy(f"{run_dir} is in use by {_describe(old)}; wait for it to finish or stop it "
                             f"(kill {old.get('pid', 'PID')}), or use another run_dir")
        if old.get("pid") not in (None, os.getpid()):
            log.warning("%s: taking over the lock left by %s, which is no longer running (killed?); "
                        "its finished rows are kept and the run resumes", run_dir, _describe(old))
            sweep_leftovers(run_dir)
        _write_holder(fd, _holder_info())
    except BaseException:
        os.close(fd)
        raise
    _held[key] = [fd, 1]
    try:
        yield path
    finally:
        del _held[key]
        try:
            _write_holder(fd, None)  # a clean exit leaves no holder to take over from
        finally:
            os.close(fd)  # closing drops the flock


def hold_file_lock(path: str | os.PathLike) -> int | None:
    """Take the exclusive lock on ``path`` (created) without waiting and keep it: returns the
    open descriptor (``os.close`` releases it; so does the kernel when the process dies), or
    None when another process holds it. Taken where flock is unavailable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if _try_flock(fd) is False:
        os.close(fd)
        return None
    return fd


@contextmanager
def try_file_lock(path: str | os.PathLike) -> Iterator[bool]:
    """:func:`hold_file_lock` for a block: yields whether the lock was taken."""
    fd = hold_file_lock(path)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


@contextmanager
def file_lock(path: str | os.PathLike, waiting: str = "") -> Iterator[None]:
    """An exclusive lock on ``path`` (created), waiting for other holders; ``waiting`` is logged
    if it has to wait. A no-op where flock is unavailable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _try_flock(fd) is False:
            if waiting:
                log.info("%s", waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_once(out: Path, build: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """Return ``out``, building it first with ``build(tmp_dir)`` unless it is complete.

    One process builds while the others wait on ``<out>.lock``; the build goes to a per-process
    temporary folder renamed to ``out`` only when finished, so a kill mid-build leaves no
    half-built entry (its leftover temporary folder is removed by the next builder)."""
    out = Path(out)
    if is_complete(out):
        return out
    with file_lock(out.with_name(out.name + ".lock"), waiting=f"waiting for another process building {out}"):
        if is_complete(out):  # built by the process we waited for
            return out
        for stale in out.parent.glob(f"{out.name}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        try:
            build(tmp)
            if out.exists():  # an incomplete entry from before the lock existed
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
