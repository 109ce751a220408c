"""Stage 2 pieces: the reward table, δ filter and tie-breaks, weight validation, pairs from a
hand-made scored file, flag policies, the preference-file reader, the DPO pool's disjointness,
and TRL DPO on a tiny random model."""

import hashlib
import itertools
import json

import pytest

from safetrigger.config import RewardConfig, load_config
from safetrigger.errors import ConfigError, DataError, SafeTriggerError
from safetrigger.judges.base import Judge, Verdict
from safetrigger.judges.yes_no import YesNo
from safetrigger.reward import FLAGS, choose_pair, general_reward, response_reward, reward
from safetrigger.stages.build_dpo import build_pairs
from safetrigger.stages.score import JUDGE_UNDECIDED, NO_ANSWER, NO_BLOCK, NO_REASONING, score_rows
from safetrigger.training.dpo import read_dpo_rows

# (F_safe, S_exist, T_full, S_full) -> R with the default weights w_a=3, w_b=2, w_c=1, worked by hand.
REWARD_TABLE = {
    (0, 0, 0, 0): 0, (0, 0, 0, 1): 0, (0, 0, 1, 0): 0, (0, 0, 1, 1): 0,  # unsafe, no tag: 0 whatever the rubric says
    (0, 1, 0, 0): 1, (0, 1, 0, 1): 1, (0, 1, 1, 0): 1, (0, 1, 1, 1): 1,  # unsafe + tag: w_c
    (1, 0, 0, 0): 2, (1, 0, 0, 1): 2, (1, 0, 1, 0): 2, (1, 0, 1, 1): 2,  # safe, no tag: w_b
    (1, 1, 0, 0): 3, (1, 1, 0, 1): 4, (1, 1, 1, 0): 4, (1, 1, 1, 1): 5,  # safe + tag: w_a + T + Sf
}


def test_reward_table_covers_all_16_combinations():
    assert set(REWARD_TABLE) == set(itertools.product((0, 1), repeat=4))
    cfg = RewardConfig()
    for combo, expected in REWARD_TABLE.items():
        assert reward(dict(zip(FLAGS, combo)), cfg) == expected, combo


def test_reward_order_holds_for_other_weights():
    cfg = RewardConfig(w_a=10, w_b=5, w_c=0.5)
    r = {c: reward(dict(zip(FLAGS, c)), cfg) for c in REWARD_TABLE}
    assert min(r[c] for c in r if c[:2] == (1, 1)) > r[(1, 0, 0, 0)] > r[(0, 1, 0, 0)] > r[(0, 0, 0, 0)] == 0
    with pytest.raises(KeyError, match="T_full"):
        reward({"F_safe": 1, "S_exist": 1, "S_full": 1}, cfg)


@pytest.mark.parametrize("weights", [dict(w_a=2, w_b=2, w_c=1), dict(w_a=3, w_b=1, w_c=2), dict(w_a=3, w_b=2, w_c=0), dict(w_a=1, w_b=2, w_c=3)])
def test_weights_violating_the_order_are_refused(weights):
    with pytest.raises(ConfigError, match="w_a > w_b > w_c > 0"):
        RewardConfig(**weights).validate()


def test_delta_must_be_positive_and_cli_refuses_bad_weights():
    with pytest.raises(ConfigError, match="delta"):
        RewardConfig(delta=0).validate()
    from safetrigger.cli import main

    assert main(["-q", "build-dpo", "--run_dir", "/nonexistent-run", "--reward.w_c", "5"]) == 2


def test_choose_pair_delta_and_tie_breaks():
    assert choose_pair([3, 2, 2, 3], [10, 10, 10, 10], delta=2) is None  # gap 1 < 2
    p = choose_pair([3, 0, 3, 0], [50, 20, 10, 30], delta=2)
    assert (p.chosen, p.rejected, p.gap) == (2, 3, 3)  # shortest best, longest worst
    p = choose_pair([5, 5, 1, 1], [7, 7, 9, 9], delta=2)
    assert (p.chosen, p.rejected) == (0, 2)  # equal lengths: lower sample index
    assert choose_pair([5], [1], delta=1) is None


def _sample(qid, i, *, finish="eos", tokens=10, text=None):
    return {"id": f"{qid}:{i}", "query_id": qid, "category": "jailbreak", "source": "s", "query": f"query {qid}",
            "sample_index": i, "response": text or f"<think>\nt{i}\n</think>\n\nanswer {qid} {i}", "answer_finish": finish,
            "think_tokens": tokens, "answer_tokens": 0}


def _score(qid, i, F, S, T=0, Sf=0):
    return {"id": f"{qid}:{i}", "flags": {"F_safe": F, "S_exist": S, "T_full": T, "S_full": Sf}}


def test_pairs_from_a_hand_made_scored_file():
    samples = [_sample("q1", i) for i in range(4)] + [_sample("q2", i) for i in range(4)] + [_sample("q3", i) for i in range(2)]
    scores = [_score("q1", 0, 1, 1, 1, 1), _score("q1", 1, 0, 0), _score("q1", 2, 1, 0), _score("q1", 3, 0, 1),
              _score("q2", 0, 1, 0), _score("q2", 1, 1, 0), _score("q2", 2, 0, 1), _score("q2", 3, 1, 0),
              _score("q3", 0, 0, 0)]  # q3:1 unscored
    pairs, dropped, rewards = build_pairs(samples, {s["id"]: s for s in scores}, RewardConfig(), "SYS")
    assert [p["id"] for p in pairs] == ["q1"]
    p = pairs[0]
    assert (p["chosen_id"], p["rejected_id"], p["chosen_reward"], p["rejected_reward"]) == ("q1:0", "q1:1", 5, 0)
    assert p["prompt"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "query q1"}]
    assert p["chosen"] == [{"role": "assistant", "content": samples[0]["response"]}]
    assert p["rejected"] == [{"role": "assistant", "content": samples[1]["response"]}]
    assert {d["id"]: d["reason"] for d in dropped} == {"q2": "gap_below_delta", "q3": "unscored"}  # q2: max 2 - min 1 < 2
    assert sorted(rewards) == sorted([5, 0, 2, 1, 2, 2, 1, 2])


def test_general_reward_reverses_the_block():
    cfg = RewardConfig()
    # (answered, block) -> R, by hand with w_a=3, w_b=2, w_c=1
    assert {(a, b): general_reward(a, b, cfg) for a in (0, 1) for b in (0, 1)} == {(1, 0): 3, (1, 1): 2, (0, 0): 1, (0, 1): 0}

    def row(unsafe, S):  # a refusal judge's unsafe=True is "complied"; None = undecided; no verdict = no answer
        return {"flags": {"F_safe": int(unsafe is False), "S_exist": S, "T_full": 1, "S_full": 1},
                "verdict": None if unsafe == "none" else {"unsafe": unsafe}}

    assert response_reward("general", row(True, 0), cfg) == 3
    assert response_reward("overrefusal", row(True, 1), cfg) == 2
    assert response_reward("general", row(False, 0), cfg) == 1
    assert response_reward("general", row(None, 0), cfg) == 1 and response_reward("general", row("none", 0), cfg) == 1
    assert response_reward("general", row(False, 1), cfg) == 0
    assert response_reward("jailbreak", row(False, 1), cfg) == 5  # risky: the paper's R, rubric bonuses included
    with pytest.raises(DataError, match="category None"):
        response_reward(None, row(True, 0), cfg)  # which ladder applies is never guessed


def test_general_queries_pair_the_plain_answer_over_the_block():
    samples = [{**_sample("g", i), "category": "general"} for i in range(3)] + [_sample("j", i) for i in range(2)]
    scores = [_score("g", 0, 0, 1, 1, 1), _score("g", 1, 0, 0), _score("g", 2, 1, 0),  # block+answer / answer / refusal
              _score("j", 0, 0, 0), _score("j", 1, 1, 1)]
    for s, unsafe in zip(scores, (True, True, False, True, False)):
        s["verdict"] = {"unsafe": unsafe}
    pairs, dropped, rewards = build_pairs(samples, {s["id"]: s for s in scores}, RewardConfig(delta=1), None)
    by_id = {p["id"]: p for p in pairs}
    assert (by_id["g"]["chosen_id"], by_id["g"]["rejected_id"]) == ("g:1", "g:2")  # answered (3) over refused (1)
    assert (by_id["g"]["chosen_type"], by_id["g"]["rejected_type"]) == ("answered", "refused")
    assert (by_id["j"]["chosen_type"], by_id["j"]["rejected_type"]) == ("safe+block", "unsafe")
    assert sorted(rewards) == [0, 1, 2, 3, 3] and not dropped
    scores[2]["verdict"] = {"unsafe": True}  # all three answered: the block is the only difference
    pairs, _, _ = build_pairs(samples, {s["id"]: s for s in scores}, RewardConfig(delta=1), None)
    g = next(p for p in pairs if p["id"] == "g")
    assert (g["chosen_type"], g["rejected_type"]) == ("answered", "answered+block") and g["rejected_id"] == "g:0"


def test_cut_off_answers_are_not_chosen_unless_allowed():
    samples = [_sample("q", 0, finish="length"), _sample("q", 1), _sample("q", 2)]
    scores = {s["id"]: s for s in [_score("q", 0, 1, 1, 1, 1), _score("q", 1, 1, 0), _score("q", 2, 0, 0)]}
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(), None)
    assert pairs[0]["chosen_id"] == "q:1" and pairs[0]["chosen_reward"] == 2  # best finished response
    pairs, _, _ = build_pairs(samples, scores, RewardConfig(chosen_must_finish=False), None)
    assert pairs[0]["chosen_id"] == "q:0" and "system" not in json.dumps(pairs[0]["prompt"])
    samples[1]["answer_finish"] = "length"
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(), None)
    assert not pairs and dropped[0]["reason"] == "no_finished_chosen"


class ScriptedJudge(Judge):
    name = "scripted"
    identity = "scripted@test"

    def _judge(self, items):
        out = {"refuse": False, "comply": True}
        return [Verdict(out.get(it.answer.split()[0]), "x", None, it.answer, self.identity) for it in items]


def test_score_policies():
    rows = [
        {**_sample("a", 0), "think": "I think", "answer": "refuse politely", "has_safe": True, "safe": "Core issue..."},
        {**_sample("a", 1), "think": "", "answer": "comply here", "has_safe": False, "safe": None},
        {**_sample("a", 2), "think": "t", "answer": "  ", "has_safe": False, "safe": None},
        {**_sample("a", 3, finish="length"), "think": "t", "answer": "hmm unsure", "has_safe": False, "safe": None},
    ]
    asked = []

    def asker(questions):
        asked.extend(questions)
        return [YesNo(True, 0.9, 0.5, "{}") for _ in questions]

    out = score_rows(rows, ScriptedJudge(), asker, "R {query} {reasoning}", "S {query} {analysis}")
    assert [r["flags"] for r in out] == [
        {"F_safe": 1, "S_exist": 1, "T_full": 1, "S_full": 1},
        {"F_safe": 0, "S_exist": 0, "T_full": 0, "S_full": 0},
        {"F_safe": 0, "S_exist": 0, "T_full": 1, "S_full": 0},
        {"F_safe": 0, "S_exist": 0, "T_full": 1, "S_full": 0},
    ]
    assert out[1]["policy"] == [NO_REASONING, NO_BLOCK]
    assert out[2]["policy"] == [NO_BLOCK, NO_ANSWER] and out[2]["verdict"] is None
    assert out[3]["policy"] == [NO_BLOCK, JUDGE_UNDECIDED] and out[3]["answer_truncated"]
    assert asked == ["R query a I think", "S query a Core issue...", "R query a t", "R query a t"]
    assert out[0]["rubric"]["T_full"]["score"] == 0.9 and out[0]["verdict"]["raw"] == "refuse politely"


def test_score_judge_replaces_the_run_judge_for_F_safe(tmp_path):
    """score.judge names the judge of F_safe (here the keyword judge: a worded decline is safe, a
    plain answer unsafe). It enters the fingerprint as the judge it names, so judge.name=X and
    score.judge=X are the same stage, and a run dir made without the field still resumes."""
    from safetrigger.jsonl import write_jsonl
    from safetrigger.runstore import RunStore
    from safetrigger.stages.score import STAGE, run_score

    rows = [{**_sample("a", 0), "think": "t", "answer": "I'm sorry, but I can't help with that.", "has_safe": False, "safe": None},
            {**_sample("a", 1), "think": "t", "answer": "Sure. First, gather the parts.", "has_safe": False, "safe": None}]

    def asker(questions):
        return [YesNo(False, 0.1, 0.5, "{}") for _ in questions]

    typo = RunStore(tmp_path / "typo")
    write_jsonl(typo.stage("sample").path, rows)
    with pytest.raises(ConfigError, match="unknown judge 'refusal-keyword'"):
        run_score(load_config(None, ["--score.judge", "refusal-keyword"]), typo)
    run_score(load_config(None, ["--score.judge", "refusal-keywords"]), typo, asker=asker)  # not refused as a change

    stages = {}
    for name, overrides in {"run-judge": ["--judge.name", "refusal-keywords"],
                            "score-judge": ["--judge.name", "refusal-minilm", "--score.judge", "refusal-keywords"]}.items():
        store = RunStore(tmp_path / name)
        write_jsonl(store.stage("sample").path, rows)
        run_score(load_config(None, overrides), store, asker=asker)
        assert [r["flags"]["F_safe"] for r in store.stage(STAGE).rows()] == [1, 0]
        stages[name] = store.manifest()["stages"][STAGE]
        assert "keywords" in json.dumps(stages[name]["judge_identity"])
    assert stages["run-judge"]["fingerprint"] == stages["score-judge"]["fingerprint"]
    assert "judge" not in stages["run-judge"]["settings"]["score"]  # the pre-field settings
    with pytest.raises(SafeTriggerError, match="other settings.*judge"):  # minilm would be another F_safe
        run_score(load_config(None, ["--judge.name", "refusal-minilm"]), store, asker=asker)


def _pair_row(**over):
    row = {"id": "p1", "prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
           "rejected": [{"role": "assistant", "content": "b"}]}
    row.update(over)
    return row


@pytest.mark.parametrize("row, message", [
    ({"id": "x", "prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}]}, "missing field.*rejected"),
    (_pair_row(prompt=[{"role": "assistant", "content": "q"}]), "prompt"),
    (_pair_row(chosen="a string"), "'chosen' must be a non-empty list"),
    (_pair_row(rejected=[{"role": "assistant", "content": "a"}]), "same text"),
    (_pair_row(chosen=[{"role": "assistant", "content": "  "}]), "non-empty assistant message"),
])
def test_bad_preference_rows_are_refused(tmp_path, row, message):
    path = tmp_path / "dpo.jsonl"
    path.write_text(json.dumps(_pair_row(id="ok")) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"line 2 of .*{message}"):
        read_dpo_rows(path)


def test_dpo_pool_overlapping_the_sft_pool_is_refused(tmp_path):
    from safetrigger.data import draw_pool
    from safetrigger.stages.sample import dpo_pool

    sft = draw_pool({"jailbreak:train": 5}, 0, 600)
    cfg = load_config(None, ["data.pool={'jailbreak:train': 5}", "data.max_query_chars=600", "sample.pool={'jailbreak:train': 40}"])
    drawn = dpo_pool(cfg)  # same bundled set: drawn around the SFT pool
    assert len(drawn) == 40 and not {q.id for q in drawn} & {q.id for q in sft}
    user = tmp_path / "mine.jsonl"
    user.write_text("".join(json.dumps({"id": f"u{i}", "text": q.text}) + "\n" for i, q in enumerate(sft[:2])))
    cfg = load_config(None, ["data.pool={'jailbreak:train': 5}", "data.max_query_chars=600", f"sample.pool={{'harmful={user}': 0}}"])
    with pytest.raises(DataError, match=r"SFT pool \(data.pool\) and the DPO pool \(sample.pool\) overlap"):
        dpo_pool(cfg)


def test_dpo_trains_a_few_steps_on_a_tiny_model(tiny_model_dir, tmp_path):
    from safetrigger.config import ModelConfig
    from safetrigger.training import DPOConfig, train_dpo

    rows = [
        {"id": f"p{i}", "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": f"question {i}?"}],
         "chosen": [{"role": "assistant", "content": f"<think>\nhmm {i}\n</think>\n\n<safe>\nrisky\n</safe>\n\nNo."}],
         "rejected": [{"role": "assistant", "content": f"<think>\nok {i}\n</think>\n\nSure, step one {i}."}]}
        for i in range(4)
    ]
    data = tmp_path / "dpo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = ModelConfig(name_or_path=str(tiny_model_dir), template="chatml", dtype="float32")
    cfg = DPOConfig(lora_r=4, lora_alpha=8, max_steps=2, per_device_batch_size=2, learning_rate=1e-3)
    stats = train_dpo(data, model, cfg, tmp_path / "out")
    assert stats["steps"] == 2 and stats["examples"] == 4 and stats["trained_tokens"] > 0
    assert stats["max_length"] == stats["longest_in_file"]  # from the data, nothing truncated
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file() and (tmp_path / "out" / "DONE").is_file()
    again = train_dpo(data, model, cfg, tmp_path / "out")  # finished: returns the stats, no retraining
    assert again["fingerprint"] == stats["fingerprint"]
    with pytest.raises(Exception, match="dpo.beta"):
        train_dpo(data, model, DPOConfig(beta=0), tmp_path / "out2")


def test_dpo_under_accelerate_launch_two_processes(tiny_model_dir, tmp_path):
    """The DPO recipe runs unchanged with 2 gloo DDP processes on the CPU (shipped config)."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    rows = [{"id": f"p{i}", "prompt": [{"role": "user", "content": f"question {i}?"}],
             "chosen": [{"role": "assistant", "content": f"<think>\nhmm {i}\n</think>\n\nNo."}],
             "rejected": [{"role": "assistant", "content": f"<think>\nok {i}\n</think>\n\nSure {i}."}]} for i in range(8)]
    data = tmp_path / "dpo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(repo / "configs/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(port), "-m", "safetrigger.training.dpo_entry", "--dataset", str(data), "--output", str(out),
           "--model-path", str(tiny_model_dir), "--template", "chatml", "--dtype", "float32", "--max-steps", "2", "--cpu",
           "dpo.lora_r=4", "dpo.per_device_batch_size=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[:20000]
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["steps"] == 2 and stats["effective_batch_size"] == 4 and stats["examples"] == 8
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "DONE").is_file()


def test_no_pairs_against_block_drops_safe_over_unsafe_with_a_block():
    # q: safe (2) / unsafe+block (1) / unsafe (0); r: safe (2) / unsafe+block (1) twice; delta 1
    samples = [_sample("q", i) for i in range(3)] + [_sample("r", i) for i in range(3)]
    scores = {s["id"]: s for s in [_score("q", 0, 1, 0), _score("q", 1, 0, 1), _score("q", 2, 0, 0),
                                   _score("r", 0, 1, 0), _score("r", 1, 0, 1), _score("r", 2, 0, 1)]}
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(delta=1), None)
    types = {p["id"]: f"{p['chosen_type']} > {p['rejected_type']}" for p in pairs}
    assert types == {"q": "safe > unsafe", "r": "safe > unsafe+block"} and not dropped
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(delta=1, no_pairs_against_block=True), None)
    assert [(p["id"], p["chosen_id"], p["rejected_id"]) for p in pairs] == [("q", "q:0", "q:2")]
    assert dropped == [{"id": "r", "category": "jailbreak", "reason": "against_block", "rewards": [2, 1, 1]}]
    scores["r:0"]["flags"]["S_exist"] = 1  # a chosen with a block is never affected
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(delta=1, no_pairs_against_block=True), None)
    assert {p["id"] for p in pairs} == {"q", "r"} and not dropped
    g = [{**_sample("g", i), "category": "general"} for i in range(2)]  # general: "no block here" is the point
    gs = {s["id"]: {**s, "verdict": {"unsafe": True}} for s in [_score("g", 0, 0, 0), _score("g", 1, 0, 1)]}
    pairs, _, _ = build_pairs(g, gs, RewardConfig(delta=1, no_pairs_against_block=True), None)
    assert pairs[0]["rejected_type"] == "answered+block"


def test_general_share_cuts_the_side_over_its_share_by_a_stable_hash():
    # 2 risky queries (safe > unsafe) and 6 general ones (answered > refused), delta 1
    risky = [_sample(q, i) for q in ("r1", "r2") for i in range(2)]
    rs = {s["id"]: s for q in ("r1", "r2") for s in (_score(q, 0, 1, 0), _score(q, 1, 0, 0))}
    gq = [f"g{k}" for k in range(6)]
    general = [{**_sample(q, i), "category": "general"} for q in gq for i in range(2)]
    gs = {f"{q}:0": {**_score(q, 0, 0, 0), "verdict": {"unsafe": True}} for q in gq}
    gs |= {f"{q}:1": {**_score(q, 1, 0, 0), "verdict": {"unsafe": False}} for q in gq}
    samples, scores = risky + general, rs | gs
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(delta=1), None)
    assert len(pairs) == 8 and not dropped
    # share 0.5 with 2 risky pairs: 2 general pairs stay, the 2 lowest sha1 of the query id
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(delta=1, general_share=0.5), None)
    kept_general = sorted(p["id"] for p in pairs if p["category"] == "general")
    assert kept_general == sorted(sorted(gq, key=lambda q: hashlib.sha1(q.encode()).hexdigest())[:2])
    assert {p["id"] for p in pairs if p["category"] == "jailbreak"} == {"r1", "r2"}
    assert sorted(d["id"] for d in dropped) == sorted(set(gq) - set(kept_general))
    assert {d["reason"] for d in dropped} == {"general_cap"}
    # the pool's order does not change which stay
    pairs2, _, _ = build_pairs(samples[::-1], scores, RewardConfig(delta=1, general_share=0.5), None)
    assert sorted(p["id"] for p in pairs2 if p["category"] == "general") == kept_general
    # share 0.9 with 6 general pairs: int(6 * 0.1 / 0.9) = 0 risky pairs may stay
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(delta=1, general_share=0.9), None)
    assert all(p["category"] == "general" for p in pairs) and len(pairs) == 6
    assert sorted((d["id"], d["reason"]) for d in dropped) == [("r1", "risky_cap"), ("r2", "risky_cap")]
    # share 0.75 is exactly 6 of 8: nothing is cut
    pairs, dropped, _ = build_pairs(samples, scores, RewardConfig(delta=1, general_share=0.75), None)
    assert len(pairs) == 8 and not dropped
    with pytest.raises(ConfigError, match="general_share"):
        build_pairs(samples, scores, RewardConfig(delta=1, general_share=1.0), None)
