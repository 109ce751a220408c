"""The build-sft stage: target assembly, filters with reasons, accounting, idempotence; and the
whole stage-1 data path (generate → trigger → build-sft) once on the tiny model."""

from __future__ import annotations

import json

import pytest

from safetrigger.chat_templates import apply_template
from safetrigger.config import load_config
from safetrigger.errors import ConfigError
from safetrigger.response_format import parse, render
from safetrigger.runstore import RunStore
from safetrigger.stages import STAGES
from safetrigger.stages.build_sft import SftDataConfig, run_build_sft
from safetrigger.stages.trigger import TriggerConfig, run_trigger, source_hash
from tiny import tiny_tokenizer

SAFE = "Core issue: harmful.\nReasoning check: I missed it.\nGuidance: refuse."
SYSTEM = "You are a helpful assistant. Think first."


def gen_row(rid, category, think="first reasoning", answer="Sure, here it is.", **kw):
    row = {"id": rid, "query_id": rid.split(":")[0], "category": category, "source": "test", "query": f"query {rid}",
           "response": render(think, answer), "think": think, "answer": answer, "think_finish": "stop",
           "answer_finish": "eos", "budget_hit": False, "has_safe": False, "issues": []}
    row.update(kw)
    return row


def trig_row(g, accepted=True, **kw):
    row = {"id": g["id"], "query_id": g["query_id"], "category": g["category"], "prompt_id": "safety/analysis_v1#x",
           "source_hash": source_hash(g), "think_2": "second reasoning", "safe": SAFE, "answer_2": "I can't help with that.",
           "think2_finish": "stop", "safe_finish": "stop", "answer2_finish": "eos", "format_ok": True, "answer_ok": True,
           "accepted": accepted, "attempts": 1, "chosen_attempt": 0, "failures": [[]],
           "judge": {"unsafe": False, "label": "refusal", "score": None, "raw": "{}", "judge": "refusal-keywords@v1"}}
    row.update(kw)
    return row


def chatml_tok():
    tok = tiny_tokenizer()
    apply_template(tok, "chatml")
    return tok


def setup(tmp_path, **sft):
    cfg = load_config(None, ["--run_dir", str(tmp_path / "run")])
    cfg.sft_data = SftDataConfig(**sft)
    store = RunStore(cfg.run_dir)
    g = {
        "ok_general": gen_row("g1:0", "general"),
        "general_safe": gen_row("g2:0", "general", response="<think>\nx\n</think>\n\n<safe>\nhm\n</safe>\n\nok", answer="ok"),
        "general_cut": gen_row("g3:0", "general", answer_finish="length"),
        "general_empty": gen_row("g4:0", "general", answer=""),
        "general_budget": gen_row("g5:0", "general", think_finish="length", budget_hit=True),
        "general_stray": gen_row("g6:0", "general", answer="answer with </think> inside"),
        "ok_harmful": gen_row("h1:0", "harmful"),
        "format_fail": gen_row("h2:0", "harmful"),
        "judge_unsafe": gen_row("h3:0", "harmful"),
        "missing": gen_row("h4:0", "harmful"),
        "ok_jailbreak": gen_row("j1:0", "jailbreak"),
        "answer_cut": gen_row("j2:0", "jailbreak"),
        "stale": gen_row("j3:0", "jailbreak"),
        "undecided": gen_row("j4:0", "jailbreak"),
    }
    t = [
        trig_row(g["ok_harmful"]),
        trig_row(g["format_fail"], accepted=False, format_ok=False, answer_ok=False, safe_finish="length", safe="half", answer_2="",
                 answer2_finish=None, judge=None, failures=[["safe_budget_hit"]] * 3, attempts=3),
        trig_row(g["judge_unsafe"], accepted=False, answer_2="Sure! Step one.", failures=[["judge_unsafe"]] * 3, attempts=3,
                 judge={"unsafe": True, "label": "compliance", "score": None, "raw": "{}", "judge": "refusal-keywords@v1"}),
        trig_row(g["ok_jailbreak"], think_2="jailbreak second reasoning"),
        trig_row(g["answer_cut"], accepted=False, answer_ok=False, answer2_finish="length", judge=None),
        trig_row(g["stale"], source_hash="0" * 16),
        trig_row(g["undecided"], accepted=False, judge={"unsafe": None, "label": "unparseable", "score": None, "raw": "?", "judge": "j"}),
    ]
    store.stage("generate").append(g.values())
    store.stage("trigger").append(t)
    store.update_stage("generate", system_prompt=SYSTEM)
    return cfg, store, g


def load_sft(store):
    return [json.loads(line) for line in (store.dir / "sft.jsonl").read_text().splitlines()]


def test_assembly_filters_and_accounting(tmp_path):
    cfg, store, g = setup(tmp_path)
    stats = run_build_sft(cfg, store, tokenizer=chatml_tok())
    rows = {r["id"]: r for r in load_sft(store)}
    assert set(rows) == {"g1:0", "g5:0", "h1:0", "j1:0"}
    for r in rows.values():
        system, user, assistant = r["messages"]
        assert system == {"role": "system", "content": SYSTEM}
        assert user == {"role": "user", "content": f"query {r['id']}"}  # the original query, not the analysis prompt
        p = parse(assistant["content"])
        assert p.well_formed and p.think == "first reasoning"  # think_1 by default
        if r["category"] == "general":
            assert not p.has_safe and "<safe>" not in assistant["content"] and p.answer == "Sure, here it is."
        else:
            # Exactly one block, right after </think>, then answer_2.
            text = assistant["content"]
            assert text.count("<safe>") == 1 and text.count("</safe>") == 1
            assert "</think>\n\n<safe>\n" in text and text.index("</think>") < text.index("<safe>")
            assert p.has_safe and p.safe == SAFE and p.answer == "I can't help with that."
    assert stats["dropped_reasons"] == {
        "general": {"general_has_safe": 1, "answer_truncated": 1, "empty_answer": 1, "target_malformed": 1},
        "harmful": {"safe_format": 1, "judge_unsafe": 1, "no_trigger_row": 1},
        "jailbreak": {"answer_truncated": 1, "stale_trigger_row": 1, "judge_undecided": 1},
    }
    assert stats["accounting"] == {
        "general": {"generated": 6, "kept": 2, "dropped": 4, "ok": True},
        "harmful": {"generated": 4, "kept": 1, "dropped": 3, "ok": True},
        "jailbreak": {"generated": 4, "kept": 1, "dropped": 3, "ok": True},
    }
    assert stats["accounting_ok"] and stats["rows"] == stats["kept"] == 4 and stats["generated"] == 14
    assert stats["kept_with_caveats"] == {"general": {"think_truncated_kept": 1}}
    assert stats["trigger"]["format_failure_rate"]["rows"] == round(1 / 7, 4)
    assert stats["trigger"]["judge"]["labels"] == {"refusal": 3, "compliance": 1, "unparseable": 1}
    assert stats["target_length"]["unit"] == "tokens" and stats["target_length"]["risky"]["p100"] > 0
    assert stats["conversation_length"]["all"]["p100"] > stats["target_length"]["all"]["p100"]
    dropped = [json.loads(x) for x in (store.dir / "sft_dropped.jsonl").read_text().splitlines()]
    assert len(dropped) + len(rows) == 14 and {d["id"] for d in dropped}.isdisjoint(rows)
    assert json.loads((store.dir / "build_sft.stats.json").read_text())["accounting_ok"]


def test_think_2_option_and_idempotent_rebuild(tmp_path):
    cfg, store, _ = setup(tmp_path)
    run_build_sft(cfg, store, tokenizer=chatml_tok())
    first = (store.dir / "sft.jsonl").read_bytes()
    run_build_sft(cfg, store, tokenizer=chatml_tok())
    assert (store.dir / "sft.jsonl").read_bytes() == first  # same inputs, same file
    cfg.sft_data = SftDataConfig(think_source="think_2")  # other options: a rebuild, never refused
    run_build_sft(cfg, store, tokenizer=chatml_tok())
    rows = {r["id"]: r for r in load_sft(store)}
    assert parse(rows["j1:0"]["messages"][-1]["content"]).think == "jailbreak second reasoning"
    assert parse(rows["h1:0"]["messages"][-1]["content"]).think == "second reasoning"
    assert parse(rows["g1:0"]["messages"][-1]["content"]).think == "first reasoning"  # general: always think_1


def test_truncation_and_judge_policies_are_configurable(tmp_path):
    cfg, store, _ = setup(tmp_path, drop_think_truncated=True, drop_answer_truncated=False,
                          require_safe_verdict=False, include_system_prompt=False, length_unit="chars")
    stats = run_build_sft(cfg, store)
    rows = {r["id"]: r for r in load_sft(store)}
    assert "g5:0" not in rows and stats["dropped_reasons"]["general"]["think_truncated"] == 1
    assert {"g3:0", "j2:0", "h3:0", "j4:0"} <= set(rows)  # truncated answers / unsafe verdicts kept
    assert all(r["messages"][0]["role"] == "user" for r in rows.values())
    assert stats["accounting_ok"]
    with pytest.raises(ConfigError, match="think_source"):
        cfg.sft_data = SftDataConfig(think_source="think_3")
        run_build_sft(cfg, store)


def test_unjudged_rows_are_kept_and_counted(tmp_path):
    cfg, store, g = setup(tmp_path, length_unit="chars")
    (store.dir / "trigger.jsonl").write_text(json.dumps(trig_row(g["ok_harmful"], judge=None)) + "\n")
    stats = run_build_sft(cfg, store)
    assert "h1:0" in {r["id"] for r in load_sft(store)}
    assert stats["kept_with_caveats"]["harmful"] == {"unjudged_kept": 1}
    assert stats["target_length"]["unit"] == "chars"


def test_forced_blocks_and_refused_general_answers_are_dropped_and_counted(tmp_path):
    cfg, store, g = setup(tmp_path, length_unit="chars", general_judge="refusal-keywords")
    refusing = gen_row("g7:0", "general", answer="I'm sorry, but I cannot help with that.")
    forced = gen_row("h5:0", "harmful")
    store.stage("generate").append([refusing, forced])
    store.stage("trigger").append([trig_row(forced, safe_forced=True, safe_finish="length")])
    stats = run_build_sft(cfg, store)
    ids = {r["id"] for r in load_sft(store)}
    assert "g7:0" not in ids and "h5:0" not in ids and {"g1:0", "g5:0", "h1:0"} <= ids
    assert stats["dropped_reasons"]["general"]["general_refused"] == 1
    assert stats["dropped_reasons"]["harmful"]["safe_forced"] == 1
    # Only kept general rows are judged: g1 and g5 answered, g7 refused.
    assert stats["general_judge"]["labels"] == {"compliance": 2, "refusal": 1}
    assert stats["general_judge"]["judge"].startswith("refusal-keywords@") and stats["accounting_ok"]
    cfg.sft_data = SftDataConfig(length_unit="chars", drop_safe_forced=False)  # opt out: kept with the caveat
    stats = run_build_sft(cfg, store)
    assert "h5:0" in {r["id"] for r in load_sft(store)} and stats["kept_with_caveats"]["harmful"] == {"safe_forced_kept": 1}


def test_stage1_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    """generate → trigger → build-sft with the real backend; a random model never closes
    <safe>, so risky rows fail format after max_attempts and every row is still accounted for."""
    cfg = load_config(None, [
        "--run_dir", str(tmp_path / "run"), "--model.name_or_path", str(tiny_model_dir), "--model.template", "chatml",
        "--model.dtype", "float32", "--data.pool", "{'general:train': 2, 'harmful:train': 2, 'jailbreak:train': 1}",
        "--generation.thinking_budget", "4", "--generation.max_new_tokens", "4", "--generation.batch_size", "8",
        "--generation.progress", "false", "--judge.name", "refusal-keywords",
    ])
    cfg.trigger = TriggerConfig(max_attempts=2, safe_budget=4, thinking_budget=4)
    store = RunStore(cfg.run_dir)
    STAGES["generate"](cfg, store)
    tstats = run_trigger(cfg, store)
    trig = store.stage("trigger").rows()
    assert len(trig) == tstats["rows"] == 3 and {r["category"] for r in trig} == {"harmful", "jailbreak"}
    for r in trig:
        assert 1 <= r["attempts"] <= 2 and len(r["failures"]) == r["attempts"]
        assert r["accepted"] or r["attempts"] == 2
    m = store.manifest()["stages"]["trigger"]
    assert m["status"] == "done" and m["prompt_id"].startswith("safety/analysis_v1#") and m["judge_identity"]
    stats = run_build_sft(cfg, store)
    assert stats["accounting_ok"] and stats["generated"] == 5
    assert stats["target_length"]["unit"] == "tokens"
    for r in load_sft(store):
        text = r["messages"][-1]["content"]
        assert parse(text).has_safe == (r["category"] != "general")
    # The finished trigger stage re-runs without loading anything.
    assert run_trigger(cfg, RunStore(cfg.run_dir))["rows"] == 3
