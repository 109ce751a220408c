"""Data-parallel stages: `--shard i/n` splits pending rows by a stable hash, each shard appends to
its own file, readers merge by id, the unsharded run folds the shard files in. A shard killed
with SIGKILL and re-run loses nothing and duplicates nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safetrigger.config import load_config
from safetrigger.errors import ConfigError, SafeTriggerError
from safetrigger.locks import try_file_lock
from safetrigger.runstore import RunStore, Shard
from safetrigger.stages import STAGES

POOL = "{'general:train': 10, 'harmful:train': 10, 'jailbreak:train': 10}"


def test_shards_partition_every_key_exactly_once():
    keys = [f"q-{i}" for i in range(500)]
    shards = [Shard(i, 3) for i in range(3)]
    owners = [[s.index for s in shards if s.owns(k)] for k in keys]
    assert all(len(o) == 1 for o in owners)
    assert all(len([o for o in owners if o == [i]]) > 100 for i in range(3))  # a fair split, not all in one
    assert Shard(1, 3).owns("q-7") == Shard.parse("1/3").owns("q-7")  # stable: no per-process salt


@pytest.mark.parametrize("spec", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_spec_is_refused(spec):
    with pytest.raises(ConfigError, match="--shard must be i/n"):
        Shard.parse(spec)


def test_merged_view_dedups_and_merge_skips_a_running_shard(tmp_path):
    a = RunStore(tmp_path, Shard(0, 2)).stage("generate")
    b = RunStore(tmp_path, Shard(1, 2)).stage("generate")
    a.append([{"id": "x"}, {"id": "y"}])
    b.append([{"id": "z"}])
    (tmp_path / "generate.shard-1-of-2.jsonl").open("a").write('{"id": "x"}\n{"id": "torn')  # a repeat + a write in flight
    merged = RunStore(tmp_path).stage("generate")
    assert [r["id"] for r in merged.rows()] == ["x", "y", "z"]
    assert (tmp_path / "generate.shard-1-of-2.jsonl").read_text().endswith('"torn')  # a reader never truncates others
    with try_file_lock(tmp_path / "generate.shard-1-of-2.lock") as free:  # shard 1 "still running"
        assert free
        assert merged.merge_shards() == 2  # shard 0 folded in
    assert not (tmp_path / "generate.shard-0-of-2.jsonl").exists()
    assert sorted(r["id"] for r in merged.rows()) == ["x", "y", "z"]


def test_a_shard_cannot_run_twice_at_once(tmp_path):
    one, two = RunStore(tmp_path, Shard(0, 2)), RunStore(tmp_path, Shard(0, 2))
    one.begin_stage("generate", {}, {"a": 1})
    with pytest.raises(SafeTriggerError, match="already running"):
        two.begin_stage("generate", {}, {"a": 1})
    one.finish_stage("generate", {"rows": 0})
    two.begin_stage("generate", {}, {"a": 1})  # released at finish


def _args(model_dir, run, *extra):
    return [
        sys.executable, "-m", "safetrigger", "-q", "generate", "--run_dir", str(run),
        "--model.name_or_path", str(model_dir), "--model.template", "chatml", "--model.dtype", "float32",
        "--data.pool", POOL, "--data.max_query_chars", "800", "--generation.thinking_budget", "16",
        "--generation.max_new_tokens", "16", "--generation.batch_size", "2", "--generation.save_every", "2", *extra,
    ]


def test_two_shards_one_killed_and_rerun_give_every_id_once(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    shard = [run / f"generate.shard-{i}-of-2.jsonl" for i in range(2)]
    procs = [subprocess.Popen(_args(tiny_model_dir, run, "--shard", f"{i}/2"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    deadline = time.time() + 120
    while time.time() < deadline and (not shard[1].exists() or shard[1].read_text().count("\n") < 2):
        assert procs[1].poll() is None, procs[1].stderr.read().decode()[-2000:]
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    assert procs[0].wait(timeout=120) == 0, procs[0].stderr.read().decode()[-2000:]
    killed_at = shard[1].read_text().count("\n")
    cfg = load_config(None, _args(tiny_model_dir, run)[5:])
    STAGES["generate"](cfg, RunStore(run, Shard(1, 2)))  # the re-run of the killed shard (in-process: no second start-up)
    ids = [[json.loads(x)["id"] for x in p.read_text().splitlines()] for p in shard]
    assert 2 <= killed_at < len(ids[1]), "the kill should land mid-shard"
    assert not set(ids[0]) & set(ids[1]) and len(ids[0]) + len(ids[1]) == 30
    assert all(Shard(i, 2).owns(rid.rsplit(":", 1)[0]) for i in range(2) for rid in ids[i])
    m = json.loads((run / "manifest.json").read_text())["stages"]["generate"]
    assert {k: v["status"] for k, v in m["shards"].items()} == {"0/2": "done", "1/2": "done"}
    assert "status" not in m and not (run / "generate.stats.json").exists()  # a shard never writes the stage's stats

    # the unsharded run: nothing left to generate, folds the shard files in, writes the stats
    stats = STAGES["generate"](cfg, RunStore(run))
    rows = [json.loads(x) for x in (run / "generate.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}) == 30 == stats["rows"]
    assert {r["id"] for r in rows} == set(ids[0]) | set(ids[1])
    assert not list(run.glob("generate.shard-*"))
    assert json.loads((run / "manifest.json").read_text())["stages"]["generate"]["status"] == "done"


def test_shard_flag_only_on_row_stages(capsys):
    from safetrigger.cli import main

    with pytest.raises(SystemExit):
        main(["build-sft", "--shard", "0/2"])
    assert "unrecognized arguments: --shard" in capsys.readouterr().err
