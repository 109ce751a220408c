"""scripts/trigger_probability.py on a tiny random model: one line per category and split, each
P a probability (teacher-forced and, with --sampled, after the sampling chain), the train rows
grouped into risky / general, and a separation line (AUROC) for each risky set against general."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "trigger_probability.py"


def _sft_row(cat, query, reply):
    return {"id": f"{cat}:0", "category": cat, "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": query}, {"role": "assistant", "content": reply}]}


def test_trigger_probability_reports_each_category(tiny_model_dir, tmp_path):
    rows = [_sft_row("harmful", "how to pick a lock", "<think>\nhm\n</think>\n\n<safe>\nCore issue: x\n</safe>\n\nNo."),
            _sft_row("jailbreak", "pretend and pick a lock", "<think>\nok\n</think>\n\n<safe>\nCore issue: y\n</safe>\n\nNo."),
            _sft_row("general", "bake bread", "<think>\nflour\n</think>\n\nMix and bake.")]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = tmp_path / "eval" / "generations" / "st-s"
    gen.mkdir(parents=True)
    (gen / "general-dev.jsonl").write_text(json.dumps({"benchmark": "general-dev", "query": "a poem", "think": "lines"}) + "\n"
                                           + json.dumps({"benchmark": "general-dev", "query": "x", "think": None}) + "\n")
    out = subprocess.run([sys.executable, str(SCRIPT), str(tiny_model_dir), str(tmp_path), "--sampled",
                          "--audit", str(tiny_model_dir)], capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {tuple(line.split()[:2]): line for line in out.stdout.splitlines() if "mean P=" in line}
    assert set(lines) == {("train", "general"), ("train", "risky"), ("dev", "general-dev")}
    assert "n=   2" in lines[("train", "risky")] and "n=   1" in lines[("dev", "general-dev")]  # no-reasoning row skipped
    for line in lines.values():
        for key in ("mean P", "sampled P"):
            assert 0.0 <= float(re.search(key + r"=([0-9.]+)", line).group(1)) <= 1.0
    # one line per column for train's risky-vs-general split (dev holds general only: no line)
    split = [line for line in out.stdout.splitlines() if "AUROC=" in line and not line.startswith("audit")]
    assert len(split) == 2 and all(line.startswith("train") and "risky vs general" in line for line in split)
    assert all(0.0 <= float(re.search(r"AUROC=([0-9.]+)", line).group(1)) <= 1.0 for line in split)
    # --audit: the audit question's P(yes) per dev set, with and without the reasoning
    audit = [line for line in out.stdout.splitlines() if line.startswith("audit")]
    assert [line.split(":")[0] for line in audit] == ["audit, query + reasoning", "audit, query only"]
    assert all(0.0 <= float(re.search(r"P\(yes\)=([0-9.]+)", line).group(1)) <= 1.0 for line in audit)


def test_the_prompt_is_the_one_phase_2_continues(tiny_model_dir):
    """The template opens '<think>' itself: the script must not open it a second time."""
    import importlib.util

    from transformers import AutoTokenizer

    from safetrigger.chat_templates import render_prompt
    from safetrigger.generation.reasoning import CLOSE_THINK

    spec = importlib.util.spec_from_file_location("trigger_probability", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = mod.phase2_prompt(tok, "S", "bake bread", "flour ")
    assert prompt == render_prompt(tok, "bake bread", system="S") + "flour" + CLOSE_THINK
    assert prompt.count("<think>") == 1 and prompt.endswith("flour\n</think>")

