"""The generate stage: rows, stats, manifest, and resume after an interruption or a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safetrigger.config import load_config
from safetrigger.runstore import RunStore
from safetrigger.stages import STAGES

POOL = "{'general:train': 3, 'harmful:train': 3, 'jailbreak:train': 2}"


def _cfg(model_dir, run_dir, *extra):
    return load_config(None, [
        "--run_dir", str(run_dir), "--model.name_or_path", str(model_dir), "--model.template", "chatml",
        "--model.dtype", "float32", "--data.pool", POOL, "--generation.thinking_budget", "6",
        "--generation.max_new_tokens", "5", "--generation.batch_size", "4", "--generation.progress", "false", *extra,
    ])


def test_generate_rows_stats_and_manifest(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path / "run", "--generation.num_samples", "2", "--generation.temperature", "1.0")
    stats = STAGES["generate"](cfg, RunStore(cfg.run_dir))
    rows = RunStore(cfg.run_dir).stage("generate").rows()
    assert len(rows) == 8 * 2 == stats["rows"]
    assert len({r["id"] for r in rows}) == 16
    assert {r["category"] for r in rows} == {"general", "harmful", "jailbreak"}
    assert sum(v["rows"] for v in stats["per_category"].values()) == 16
    for r in rows:
        assert r["id"] == f"{r['query_id']}:{r['sample_index']}"
        assert r["response"].startswith("<think>\n") and "</think>" in r["response"]
        assert r["think_tokens"] <= 6 and r["answer_tokens"] <= 5
    m = json.loads((Path(cfg.run_dir) / "manifest.json").read_text())
    st = m["stages"]["generate"]
    assert st["status"] == "done" and st["model"]["template"] == "chatml" and st["backend"]["backend"] == "transformers"
    assert m["config"]["generation"]["num_samples"] == 2 and "transformers" in m["versions"]


def test_interrupted_generate_resumes_without_loss_or_duplicates(tiny_model_dir, tmp_path, monkeypatch):
    from safetrigger.generation import reasoning

    cfg = _cfg(tiny_model_dir, tmp_path / "run", "--generation.save_every", "3")
    real = reasoning.generate_responses
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    import safetrigger.generation as gen_pkg

    monkeypatch.setattr(gen_pkg, "generate_responses", dying)
    with pytest.raises(KeyboardInterrupt):
        STAGES["generate"](cfg, RunStore(cfg.run_dir))
    partial = RunStore(cfg.run_dir).stage("generate").rows()
    assert len(partial) == 3  # first chunk saved
    monkeypatch.setattr(gen_pkg, "generate_responses", real)
    STAGES["generate"](cfg, RunStore(cfg.run_dir))
    rows = RunStore(cfg.run_dir).stage("generate").rows()
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
    assert [r["id"] for r in rows[:3]] == [r["id"] for r in partial]


def test_killed_cli_run_resumes_to_the_same_ids(tiny_model_dir, tmp_path):
    """SIGKILL a real `safetrigger generate` mid-stage, re-run it, compare with an uninterrupted run."""
    pool = "{'general:train': 10, 'harmful:train': 10, 'jailbreak:train': 10}"
    args = lambda run: [  # noqa: E731
        sys.executable, "-m", "safetrigger", "-q", "generate", "--run_dir", str(run),
        "--model.name_or_path", str(tiny_model_dir), "--model.template", "chatml", "--model.dtype", "float32",
        "--data.pool", pool, "--data.max_query_chars", "800", "--generation.thinking_budget", "16", "--generation.max_new_tokens", "16",
        "--generation.batch_size", "2", "--generation.save_every", "2",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "killed" / "generate.jsonl"
    proc = subprocess.Popen(args(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = out.read_text().count("\n")
    assert 4 <= n_before < 30, "the kill should land mid-stage"
    subprocess.run(args(tmp_path / "killed"), env=env, check=True, capture_output=True)
    subprocess.run(args(tmp_path / "clean"), env=env, check=True, capture_output=True)
    killed = RunStore(tmp_path / "killed").stage("generate").rows()
    clean = RunStore(tmp_path / "clean").stage("generate").rows()
    assert len(killed) == len({r["id"] for r in killed}) == 30
    assert {r["id"] for r in killed} == {r["id"] for r in clean}


def test_safe_opened_counts_tags_after_the_reasoning_only():
    from safetrigger.stages.activation import safe_rates
    from safetrigger.stages.stats import generation_stats

    rows = [
        {"category": "harmful", "response": "<think>\nx\n</think>\n\n<safe>\nunclosed ramble", "has_safe": False},
        {"category": "harmful", "response": "<think>\nx\n</think>\n\n<safe>\nok\n</safe>\n\nNo.", "has_safe": True},
        {"category": "general", "response": "<think>\nmaybe <safe> here\n</think>\n\nAnswer.", "has_safe": False},
        {"category": "general", "response": "<think>\nx\n</think>\n\nAnswer.", "has_safe": False},
    ]
    rates = safe_rates(generation_stats(rows))
    assert rates == {"safe_rate": {"general": 0.0, "harmful": 0.5}, "safe_opened_rate": {"general": 0.0, "harmful": 1.0}}
