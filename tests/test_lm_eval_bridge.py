"""The lm-evaluation-harness bridge: reasoning stripped before scoring, plain log-likelihoods for
multiple choice, offline on tiny local tasks (tests/fixtures/lm_eval) and a tiny random model."""

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from safetrigger.cli import main  # noqa: E402
from safetrigger.config import GenerationConfig, ModelConfig  # noqa: E402
from safetrigger.errors import ConfigError, DataError  # noqa: E402
from safetrigger.evaluation.lm_eval_bridge import cut_at_stops, make_lm, run_capability, task_manager  # noqa: E402
from safetrigger.models import load_model  # noqa: E402

ROOT = Path(__file__).parent.parent
TASKS = ROOT / "tests/fixtures/lm_eval"
QA, MC = "safetrigger_tiny_qa", "safetrigger_tiny_mc"
GOLD = {"2 + 2": "4", "capital of France": "Paris", "daytime sky": "blue"}


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the task YAMLs name their data files relative to the repository root


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", dtype="float32"))


def fake_generator(prompts):
    """Reasoning that names a wrong answer, then the right one; the sky question never closes
    its reasoning. Text after the answer is what the task's `until` must cut."""
    out = []
    for p in prompts:
        assert p.rstrip().endswith("<think>"), "the prompt must open the reasoning"
        key = next(k for k in GOLD if k in p)
        if key == "daytime sky":
            out.append("Let me think. It could be blue or grey, I keep going")
        else:
            out.append(f"The answer is surely 999, or is it?\n</think>\n\n{GOLD[key]}\n\nQuestion: trailing text")
    return out


def test_cut_at_stops():
    assert cut_at_stops("4\n\nQuestion: x", ["\n\n", "Question:"]) == "4"
    assert cut_at_stops("Paris. More", ".") == "Paris"
    assert cut_at_stops(" blue ", None) == "blue"
    assert cut_at_stops("a Question: b\n\nc", ["\n\n", "Question:"]) == "a"


def test_reasoning_is_stripped_before_scoring(loaded, tmp_path):
    lm = make_lm(loaded, generator=fake_generator, system=None, batch_size=2)
    out = run_capability(lm, [QA, MC], include_path=str(TASKS), output_dir=tmp_path, bootstrap_iters=0)

    res = out["results"]
    assert set(res) >= {QA, MC}
    # 2 of 3 correct: the unclosed reasoning yields no answer even though it mentions "blue".
    assert res[QA]["exact_match,none"] == pytest.approx(2 / 3)
    assert 0.0 <= res[MC]["acc,none"] <= 1.0
    assert out["n-samples"][MC]["effective"] == 2
    st = out["safetrigger"]
    assert (st["generate_requests"], st["answered"], st["no_answer"]) == (3, 2, 1)
    assert st["loglikelihood_requests"] == 5  # 3 + 2 options, scored as plain continuations

    samples = [json.loads(line) for line in (tmp_path / f"samples_{QA}.jsonl").read_text().splitlines()]
    scored = sorted(s["filtered_resps"][0] for s in samples)
    assert scored == ["", "4", "Paris"]
    assert not any(re.search("think|999|Question", s) for s in scored)
    reasoning = [json.loads(line) for line in (tmp_path / "reasoning.jsonl").read_text().splitlines()]
    assert len(reasoning) == 3 and any("999" in r["completion"] for r in reasoning)
    assert {r["think_closed"] for r in reasoning} == {True, False}
    assert json.loads((tmp_path / "results.json").read_text())["results"][QA]["exact_match,none"] == pytest.approx(2 / 3)


def test_loglikelihood_is_the_plain_continuation(loaded):
    """The multiple-choice path scores context+continuation without chat template or reasoning."""
    import torch
    from lm_eval.api.instance import Instance

    lm = make_lm(loaded, generator=fake_generator, batch_size=1)
    req = Instance("loglikelihood", doc={}, arguments=("Question: What is 2 + 2?\nAnswer:", " 4"), idx=0)
    (logprob, _), = lm.loglikelihood([req], disable_tqdm=True)
    tok, model = loaded.tokenizer, loaded.model
    ctx = tok("Question: What is 2 + 2?\nAnswer:", add_special_tokens=False)["input_ids"]
    cont = tok(" 4", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits.log_softmax(-1)[0]
    expected = sum(logits[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
    assert logprob == pytest.approx(expected, abs=1e-3)


def test_real_generation_through_the_cli(tiny_model_dir, tmp_path, capsys):
    """The whole command on the tiny random model: every request is answered or counted."""
    code = main(["-q", "capability", str(tiny_model_dir), "--tasks", QA, "--include-path", str(TASKS),
                 "--limit", "2", "--output", str(tmp_path), "--model.device", "cpu",
                 "--generation.thinking_budget", "4", "--generation.max_new_tokens", "4"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert "exact_match,none" in printed["results"][QA]
    a = printed["answers"]
    assert a["generate_requests"] == 2 and a["answered"] + a["no_answer"] + a["empty_answer"] == 2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["safetrigger"]["model"]["name_or_path"] == str(tiny_model_dir)
    assert saved["safetrigger"]["strict_think"] is True


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown lm-eval task.*'safetrigger_tiny_qq'.*did you mean 'safetrigger_tiny_qa'"):
        task_manager(["safetrigger_tiny_qq"], include_path=str(TASKS), include_defaults=False)
    with pytest.raises(ConfigError, match="task folder .* not found"):
        task_manager([QA], include_path="/no/such/folder")


def test_missing_task_data_is_a_data_error(loaded, tmp_path):
    (tmp_path / "broken.yaml").write_text((TASKS / f"{QA}.yaml").read_text()
                                          .replace(f"task: {QA}", "task: safetrigger_broken")
                                          .replace("tests/fixtures/lm_eval/tiny_qa.jsonl", str(tmp_path / "missing.jsonl")))
    lm = make_lm(loaded, generator=fake_generator)
    with pytest.raises(DataError, match="could not prepare task.*safetrigger_broken"):
        run_capability(lm, ["safetrigger_broken"], include_path=str(tmp_path), bootstrap_iters=0)


def test_make_lm_needs_generation_settings(loaded):
    with pytest.raises(ConfigError, match="GenerationConfig"):
        make_lm(loaded)
    assert make_lm(loaded, GenerationConfig(batch_size=3)).batch_size == 3


def test_missing_lm_eval_is_one_error_line(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", None)  # as if not installed
    assert main(["capability", "no/such-model", "--tasks", QA]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "safetrigger[capability]" in err
