"""Atomic writes: a file appears whole or not at all; a failed write keeps the old file, leaves
no temporary file and says what to do; nothing in src/ writes a file in place any more."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from safetrigger import atomic
from safetrigger.atomic import atomic_write, write_json, write_text
from safetrigger.errors import DataError
from safetrigger.runstore import RunStore

SRC = Path(__file__).resolve().parents[1] / "src" / "safetrigger"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if atomic.TMP_MARK in p.name)


def test_write_replaces_whole_file_and_leaves_no_tmp(tmp_path):
    p = tmp_path / "sub" / "stats.json"
    write_json(p, {"a": 1})
    write_json(p, {"a": 2, "é": "ü"})
    assert json.loads(p.read_text(encoding="utf-8")) == {"a": 2, "é": "ü"}
    assert _leftovers(p.parent) == []


def test_next_write_removes_a_killed_writers_temporary_file_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    target = tmp_path / "report.html"
    left = tmp_path / f".report.html.tmp{dead.pid}"
    live = tmp_path / f".report.html.tmp{os.getppid()}"  # a writer still running
    other = tmp_path / f".results.json.tmp{dead.pid}"  # another file's: its own next write cleans it
    for f in (left, live, other):
        f.write_text("<html>half")
    write_text(target, "<html></html>")
    assert target.read_text() == "<html></html>" and not left.exists() and live.exists() and other.exists()


def test_disk_full_keeps_old_file_and_says_so(tmp_path, monkeypatch):
    p = tmp_path / "manifest.json"
    write_text(p, "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(DataError, match=r"no space left on the device writing .*manifest.json; free disk space"):
        write_text(p, "new")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []


def test_error_inside_the_block_keeps_old_file(tmp_path):
    p = tmp_path / "t.md"
    write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []


def test_finish_stage_stats_are_atomic(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    store.finish_stage("generate", {"rows": 3})
    seen = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (seen.append(Path(b).name), real(a, b)))
    store.finish_stage("generate", {"rows": 4})
    assert "generate.stats.json" in seen and "manifest.json" in seen
    assert json.loads(store.stats_path("generate").read_text())["rows"] == 4


def test_kill_during_many_rewrites_never_leaves_a_torn_file(tmp_path):
    """SIGKILL a process that rewrites a JSON file in a loop: the file always parses."""
    p = tmp_path / "x.json"
    code = ("import sys; from safetrigger.atomic import write_json\n"
            "i = 0\nwhile True:\n    write_json(sys.argv[1], {'i': i, 'pad': 'x' * 200000}); i += 1\n")
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code, str(p)], env=env)
        while not p.exists():
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert json.loads(p.read_text())["pad"] == "x" * 200000


def test_disk_full_on_stage_append_is_one_line_and_resumable(tmp_path, monkeypatch):
    stage = RunStore(tmp_path).stage("generate")
    stage.append([{"id": "a"}])
    import safetrigger.runstore as rs

    monkeypatch.setattr(rs.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(DataError, match="no space left on the device writing .*generate.jsonl; free disk space .* re-run"):
        stage.append([{"id": "b"}])
    monkeypatch.undo()
    assert "a" in RunStore(tmp_path).stage("generate").done_ids()


def test_no_in_place_writes_left_in_src():
    """Every file the package writes goes through safetrigger.atomic (appends to JSONL logs excepted)."""
    bad = []
    for f in SRC.rglob("*.py"):
        if f.name == "atomic.py":
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if re.search(r"\.write_text\(|\.write_bytes\(|open\([^)]*[\"']w[b+]?[\"']", line):
                bad.append(f"{f.relative_to(SRC)}:{n}: {line.strip()}")
    assert bad == []
