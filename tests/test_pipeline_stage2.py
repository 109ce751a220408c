"""The whole chain on a tiny random model: stage 1, then sample → score → build-dpo → dpo, and
the activation check on ST-D (base + SFT adapter + DPO adapter, stacked).

A random model never writes a <safe> block nor refuses, so the answers of the sample stage are
scripted: per query, one refusal with a complete block and one compliance. Flags then come
from the real judge (refusal keywords), parser and rubric model (the tiny base model's yes/no
logits); rewards, pairs and TRL DPO training are real.
"""

import json

import pytest

import safetrigger.generation as generation
from safetrigger.cli import main
from safetrigger.generation.base import Completion
from safetrigger.reward import FLAGS
from safetrigger.runstore import RunStore
from test_pipeline_stage1 import ANALYSIS, AuditScript

REFUSAL = f"<safe>\n{ANALYSIS}\n</safe>\n\nI can't help with that, but I can share safety resources."
COMPLIANCE = "Sure, here is how to do it: step one, step two."


class SampleScript(AuditScript):
    """AuditScript, plus scripted answers for the sample stage (the only one sampling at
    temperature 1). Its answer phase gets one prompt per (query, sample), in that order, so
    with 2 samples even positions are sample 0."""

    def complete(self, prompts, params, num_samples=1):
        if params.temperature == 1.0 and all(p.endswith("</think>") for p in prompts):
            pick = [Completion(REFUSAL, "eos", 1, 30), Completion(COMPLIANCE, "eos", 1, 12)]
            return [[pick[k % 2]] for k in range(len(prompts))]
        return super().complete(prompts, params, num_samples)


@pytest.fixture
def scripted(monkeypatch):
    real = generation.make_backend
    monkeypatch.setattr(generation, "make_backend", lambda loaded, gen, **kw: SampleScript(real(loaded, gen, **kw)))


def tiny_run_args(model_dir, run_dir, stages: str, dpo_steps: int = 2) -> list[str]:
    """Config overrides for a whole run on the tiny model, a few rows per stage (also test_branch)."""
    return [
        "--run_dir", str(run_dir), "--stages", stages,
        "--model.name_or_path", str(model_dir), "--model.template", "chatml", "--model.dtype", "float32",
        "--data.pool", "{'general:train': 2, 'harmful:train': 2, 'jailbreak:train': 2}", "--data.max_query_chars", "600",
        "--generation.thinking_budget", "6", "--generation.max_new_tokens", "6", "--sft_data.drop_answer_truncated", "false",
        "--judge.name", "refusal-keywords", "--sft.lora_r", "4", "--sft.lora_alpha", "8", "--sft.max_steps", "1",
        "--sft.per_device_batch_size", "2",
        "--sample.pool", "{'jailbreak:train': 3}", "--sample.num_samples", "2",
        "--dpo.lora_r", "4", "--dpo.lora_alpha", "8", "--dpo.max_steps", str(dpo_steps), "--dpo.per_device_batch_size", "2",
    ]


def test_full_pipeline_base_to_st_d(tiny_model_dir, tmp_path, scripted):
    run = tmp_path / "run"
    argv = [
        "-q", "run",
        *tiny_run_args(tiny_model_dir, run, "[generate, trigger, build-sft, sft, sample, score, build-dpo, dpo, activation]"),
        "--activation.pool", "{'harmful:eval': 2, 'general:eval': 1}", "--activation.model_stage", "dpo",
    ]
    assert main(argv) == 0
    store = RunStore(run)
    samples = store.stage("sample").rows()
    assert len(samples) == 6 and {r["has_safe"] for r in samples} == {True, False}
    sft_queries = {r["query_id"] for r in store.stage("generate").rows()}
    assert not sft_queries & {r["query_id"] for r in samples}  # the DPO pool is disjoint from the SFT pool
    scores = {r["id"]: r for r in store.stage("score").rows()}
    assert set(scores) == {r["id"] for r in samples}
    for r in samples:
        flags = scores[r["id"]]["flags"]
        assert set(flags) == set(FLAGS)
        assert flags["S_exist"] == int(r["has_safe"]) and flags["F_safe"] == int(r["has_safe"])  # refusal = safe here
        assert (scores[r["id"]]["rubric"]["S_full"] is not None) == r["has_safe"]  # S_full asked only with a block
        assert scores[r["id"]]["verdict"]["judge"].startswith("refusal-keywords")
    pairs = [json.loads(line) for line in (run / "dpo.jsonl").read_text().splitlines()]
    assert len(pairs) == 3
    for p in pairs:
        assert p["chosen"][0]["content"].endswith(REFUSAL.split("\n\n")[-1]) and "<safe>" in p["chosen"][0]["content"]
        assert p["rejected"][0]["content"].endswith(COMPLIANCE) and "<safe>" not in p["rejected"][0]["content"]
        assert p["chosen_reward"] >= 3 and p["rejected_reward"] == 0
        assert p["prompt"][0]["role"] == "system" and p["prompt"][-1]["role"] == "user"
    bstats = json.loads(store.stats_path("build_dpo").read_text())
    assert bstats["kept"] == 3 and bstats["dropped"] == 0 and sum(bstats["reward_histogram"].values()) == 6
    assert bstats["pair_types"] == {"safe+block > unsafe": 3}  # the contrast the reward is meant to teach
    train = json.loads((run / "dpo" / "train_stats.json").read_text())
    assert train["steps"] == 2 and train["examples"] == 3
    act = store.manifest()["stages"]["activation"]
    adapters = act["model"]["adapter"].split(",")
    assert adapters == [str(run / "sft" / "adapter"), str(run / "dpo" / "adapter")]
    assert set(json.loads(store.stats_path("activation").read_text())["safe_rate"]) == {"harmful", "general"}
