"""Stage 1 end to end on a tiny random model: generate → trigger → build-sft → sft.

A random model never writes a usable <safe> analysis, so pass ②'s block and answer come from
a scripted wrapper around the real backend (phase 1 of pass ② and all of pass ① are the
model's own). Everything else — stages, run store, filters, TRL training — is real.
"""

import json

import pytest

import safetrigger.generation as generation
from safetrigger.cli import main
from safetrigger.generation.base import Completion, GenerationBackend
from safetrigger.response_format import parse
from safetrigger.runstore import RunStore

ANALYSIS = "Core issue: the request seeks harmful help.\nReasoning check: my reasoning missed it.\nGuidance: refuse and offer a safe alternative."


class AuditScript(GenerationBackend):
    """Real generation, except the prefilled <safe> block and the answer after it (and
    blank pass-① answers, which a random model produces)."""

    def __init__(self, inner):
        self.inner = inner

    def identity(self):
        return {**self.inner.identity(), "scripted": "pass-2 block + answer"}

    def next_token_probs(self, prompts, token_ids):  # scoring is never scripted
        return self.inner.next_token_probs(prompts, token_ids)

    def next_token_entropies(self, seqs):
        return self.inner.next_token_entropies(seqs)

    def complete(self, prompts, params, num_samples=1):
        if all(p.endswith("<safe>\n") for p in prompts):
            return [[Completion(ANALYSIS, "stop", 1, 9, "</safe>")] * num_samples for _ in prompts]
        if all(p.endswith("</safe>") for p in prompts):
            return [[Completion("I can't help with that, but I can point you to safety resources.", "eos", 1, 12)] * num_samples for _ in prompts]
        out = self.inner.complete(prompts, params, num_samples)
        if all(p.endswith("</think>") for p in prompts):
            # A random model's short answer can decode to whitespace; keep answers non-empty.
            out = [[c if c.text.strip() else Completion("Here is my answer.", "eos", c.prompt_tokens, 5) for c in row] for row in out]
        return out


@pytest.fixture
def scripted_pass2(monkeypatch):
    real = generation.make_backend
    monkeypatch.setattr(generation, "make_backend", lambda loaded, gen, **kw: AuditScript(real(loaded, gen, **kw)))


def test_stage1_end_to_end(tiny_model_dir, tmp_path, scripted_pass2):
    run = tmp_path / "run"
    argv = [
        "-q", "run", "--run_dir", str(run), "--stages", "[generate, trigger, build-sft, sft, activation]",
        "--model.name_or_path", str(tiny_model_dir), "--model.template", "chatml", "--model.dtype", "float32",
        "--data.pool", "{'general:train': 3, 'harmful:train': 3, 'jailbreak:train': 2}", "--data.max_query_chars", "600",
        "--generation.thinking_budget", "8", "--generation.max_new_tokens", "6", "--sft_data.drop_answer_truncated", "false",
        "--judge.name", "refusal-keywords", "--sft.lora_r", "4", "--sft.lora_alpha", "8", "--sft.max_steps", "2",
        "--sft.per_device_batch_size", "2", "--activation.pool", "{'harmful:eval': 2, 'general:eval': 2}",
    ]
    assert main(argv) == 0
    store = RunStore(run)
    sft_rows = [json.loads(line) for line in (run / "sft.jsonl").read_text().splitlines()]
    stats = json.loads(store.stats_path("build_sft").read_text())
    assert stats["accounting_ok"]
    cats = {r["category"] for r in sft_rows}
    assert cats == {"general", "harmful", "jailbreak"}, stats
    for r in sft_rows:
        target = r["messages"][-1]["content"]
        p = parse(target)
        assert p.well_formed and p.think_closed
        if r["category"] == "general":
            assert "<safe>" not in target
        else:
            assert target.count("<safe>") == 1 and target.count("</safe>") == 1
            assert target.index("</think>") < target.index("<safe>")
            assert p.safe == ANALYSIS
            gen_row = next(g for g in store.stage("generate").rows() if g["id"] == r["id"])
            assert p.think == gen_row["think"]  # think_1: training matches inference
    train = json.loads((run / "sft" / "train_stats.json").read_text())
    assert train["examples"] == len(sft_rows) and train["trained_tokens"] > 0
    assert (run / "sft" / "adapter" / "adapter_config.json").is_file()
    m = store.manifest()["stages"]
    assert all(m[s]["status"] == "done" for s in ("generate", "trigger", "sft"))
    # Activation: the trained model on held-out prompts; the rate is what the rows say.
    act_rows = store.stage("activation").rows()
    act = json.loads(store.stats_path("activation").read_text())
    assert len(act_rows) == 4 and set(act["safe_rate"]) == {"harmful", "general"}
    for cat, rate in act["safe_rate"].items():
        rows = [r for r in act_rows if r["category"] == cat]
        assert rate == round(sum(r["has_safe"] for r in rows) / len(rows), 4)
    assert store.manifest()["stages"]["activation"]["model"]["adapter"].endswith("sft/adapter")
    # A second run skips everything that is finished.
    assert main(argv) == 0
    assert len(store.stage("generate").rows()) == 8
