"""Chaos, the CI subset: a child process writes a stage through the run store (chunked
appends, manifest updates, stats) under the run-dir lock and is SIGKILLed at random moments;
after each kill the next run resumes, and at the end every invariant of bench/chaos.py holds:
every JSONL line parses, no id lost or duplicated, the manifest agrees with the file, and the
rows equal an uninterrupted run's. The full harness (every demo stage, real CLI) is
``python bench/chaos.py``."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import chaos  # noqa: E402

N = 300
WRITER = f"""
import sys
if len(sys.argv) > 2:  # an aimed kill: POINT N (bench/chaos_points.py)
    sys.path.insert(0, {str(ROOT / "bench")!r})
    import chaos_points
    chaos_points.arm(sys.argv[2], int(sys.argv[3]))
from safetrigger.locks import run_dir_lock
from safetrigger.runstore import RunStore

run_dir = sys.argv[1]
with run_dir_lock(run_dir):
    store = RunStore(run_dir)
    store.begin_stage("generate", {{}}, {{"n": {N}}})
    stage = store.stage("generate")
    todo = [f"q{{i:04d}}" for i in range({N}) if f"q{{i:04d}}" not in stage.done_ids()]
    for k in range(0, len(todo), 7):
        stage.append({{"id": i, "response": i * 3000, "tokens": len(i)}} for i in todo[k : k + 7])
        store.update_stage("generate", progress=len(stage.done_ids()))
    # Again after the loop: a kill between the last append and its update leaves nothing to do
    # on resume, so the loop alone would finish with the count of the killed run.
    store.update_stage("generate", progress=len(stage.done_ids()))
    store.finish_stage("generate", {{"rows": len(stage.done_ids())}})
"""


def _run(run_dir: Path, kill_at: float | None = None, point: tuple[str, int] | None = None) -> bool:
    """Run the writer; SIGKILL it after ``kill_at`` seconds, or arm ``point`` (it kills itself).
    True if it was killed."""
    aimed = [point[0], str(point[1])] if point else []
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), *aimed], env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if point:
        return p.wait(timeout=120) == -signal.SIGKILL
    try:
        assert p.wait(timeout=kill_at if kill_at is not None else 120) == 0
        return False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True


@pytest.mark.parametrize("seed", [0])
def test_run_store_survives_sigkill_anywhere(tmp_path, seed):
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    _run(ref)
    t_ref = time.perf_counter() - t0
    rng = random.Random(seed)
    run = tmp_path / "run"
    kills = 0
    for _ in range(30):
        if kills == 6:
            break
        if _run(run, kill_at=rng.uniform(0.05, 0.6 * t_ref)):
            kills += 1
        else:  # finished before its kill (little was left to do): start over, that run counts for nothing
            shutil.rmtree(run)
    _run(run)
    assert kills == 6, "the writer kept finishing before its kill: nothing was tested"
    _assert_invariants(run, ref)


def _assert_invariants(run: Path, ref: Path) -> None:
    checks = {
        "jsonl": chaos.jsonl_lines_parse(run),
        "ids": chaos.ids_complete(run, ref, "generate.jsonl"),
        "manifest": chaos.manifest_agrees(run, "generate", "generate.jsonl"),
        "tmp": chaos.no_leftovers(run),
        "equal": chaos.outputs_equal(run, ref, ["generate.jsonl"]),
    }
    assert all(ok for ok, _ in checks.values()), checks
    assert json.loads((run / "manifest.json").read_text())["stages"]["generate"]["progress"] == N


def test_aimed_kills_mid_chunk_and_mid_manifest_write(tmp_path):
    """The chosen moments: a chunk cut mid-line, then a manifest update whose temporary file is
    written but not renamed. Each leaves its mark, and the resumed run clears both."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    _run(ref)
    assert _run(run, point=("chunk-write", 3))
    data = (run / "generate.jsonl").read_bytes()
    assert data and not data.endswith(b"\n"), "the kill should leave a torn last line"
    assert _run(run, point=("replace:manifest.json", 4))
    assert list(run.glob(".manifest.json.tmp*")), "the kill should leave the manifest's temporary file"
    _run(run)
    _assert_invariants(run, ref)


def test_a_point_never_reached_lets_the_run_finish(tmp_path):
    assert not _run(tmp_path / "run", point=("merge", 1))  # the writer merges nothing
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["generate"]["status"] == "done"
