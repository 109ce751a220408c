"""Two writers: a second process on a run dir refuses at once, naming the holder; a dead
holder's lock is taken over (and said); cache entries are built once by concurrent processes."""

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safetrigger.cli import main
from safetrigger.locks import LOCK_NAME, RunDirBusy, build_once, run_dir_lock

SRC = Path(__file__).resolve().parents[1] / "src"
HOLD = ("import sys, time\nfrom safetrigger.locks import run_dir_lock\n"
        "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


def _holder(run_dir: Path) -> subprocess.Popen:
    """A real second process holding the run dir's lock (its command line names the script)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), "--marker-arg"], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_refuses_naming_pid_and_command(tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    try:
        # The real CLI, in this process: refuses before loading anything.
        assert main(["generate", "--run_dir", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by pid {proc.pid}" in err and "--marker-arg" in err
        assert f"kill {proc.pid}" in err and err.count("\n") == 1
        assert main(["run", "--run_dir", str(run_dir)]) == 2
        with pytest.raises(RunDirBusy):
            with run_dir_lock(run_dir):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_stale_lock_of_a_killed_process_is_taken_over_and_said(tmp_path, caplog):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == proc.pid  # the dead holder is still named
    with caplog.at_level(logging.WARNING, logger="safetrigger.locks"):
        with run_dir_lock(run_dir):
            assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by pid {proc.pid}" in caplog.text and "no longer running" in caplog.text
    assert (run_dir / LOCK_NAME).read_text() == ""  # released cleanly: nothing to take over next time


def test_taking_over_removes_temporary_files_of_dead_writers_only(tmp_path):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir / "eval").mkdir()
    dead = [run_dir / f".manifest.json.tmp{proc.pid}", run_dir / "eval" / f".results.json.tmp{proc.pid}"]
    live = run_dir / f".sft.jsonl.tmp{os.getppid()}"  # a running process's write in flight
    for f in [*dead, live]:
        f.write_text("{half")
    keep = run_dir / ".notes.tmp"  # not an atomic-write name
    keep.write_text("mine")
    with run_dir_lock(run_dir):
        pass
    assert not any(f.exists() for f in dead) and live.exists() and keep.exists()


def test_lock_is_reentrant_in_one_process(tmp_path):
    with run_dir_lock(tmp_path):
        with run_dir_lock(tmp_path):
            pass
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def _slow_build(tmp: Path) -> None:
    log = tmp.parent / "builds.log"
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text("{}")  # noqa: atomic not needed: tmp is renamed whole
    time.sleep(0.3)  # long enough that the other processes arrive mid-build
    (tmp / "model.safetensors").write_text("w")


def _complete(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file()


def _worker(out: str, q) -> None:
    d = build_once(Path(out), _slow_build, _complete)
    q.put((str(d), _complete(d)))


def test_build_once_under_concurrent_processes(tmp_path):
    """Six processes ask for the same cache entry at once (as under accelerate launch): one builds."""
    out = tmp_path / "models" / "embedded-abc"
    out.parent.mkdir()
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(out), q)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [(str(out), True)] * 6
    assert len((out.parent / "builds.log").read_text().split()) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["builds.log", "embedded-abc", "embedded-abc.lock"]


def test_build_once_after_a_killed_build_rebuilds_and_cleans_up(tmp_path):
    out = tmp_path / "m"
    (tmp_path / "m.tmp999").mkdir()  # what a SIGKILLed builder leaves
    (tmp_path / "m.tmp999" / "config.json").write_text("{}")
    assert build_once(out, _slow_build, _complete) == out and _complete(out)
    assert not (tmp_path / "m.tmp999").exists()
