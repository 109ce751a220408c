"""Generation backend (transformers) and the two-phase reasoning protocol."""

import pytest

from safetrigger.config import GenerationConfig, ModelConfig
from safetrigger.generation import Completion, GenerationBackend, SamplingParams, build_prompts, generate_responses, make_backend
from safetrigger.generation.transformers_backend import TransformersBackend
from safetrigger.models import load_model


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", template="chatml"))


def test_batched_generation_shapes_and_finish_reasons(loaded):
    be = TransformersBackend(loaded.model, loaded.tokenizer, batch_size=3, progress=False, end_tokens=["<|im_end|>"])
    prompts = ["a", "The quick brown fox jumps over the lazy dog. " * 3, "How do I bake bread?", "x y", "2 + 2"]
    out = be.complete(prompts, SamplingParams(max_new_tokens=7, temperature=1.0, seed=1), num_samples=2)
    assert len(out) == len(prompts) and all(len(row) == 2 for row in out)
    for p, row in zip(prompts, out):
        for c in row:
            assert c.finish_reason in ("eos", "length")
            assert 0 <= c.completion_tokens <= 7
            assert c.prompt_tokens == len(loaded.tokenizer(p, add_special_tokens=False)["input_ids"])
            if c.finish_reason == "length":
                assert c.completion_tokens == 7
    # Same seed and batch size: same samples.
    again = be.complete(prompts, SamplingParams(max_new_tokens=7, temperature=1.0, seed=1), num_samples=2)
    assert [[c.text for c in r] for r in again] == [[c.text for c in r] for r in out]


def test_stop_string_cuts_and_is_reported(loaded):
    be = TransformersBackend(loaded.model, loaded.tokenizer, batch_size=2, progress=False)
    params = dict(max_new_tokens=16, temperature=1.0, seed=3)
    free = be.complete(["How do I bake bread?"], SamplingParams(**params))[0][0]
    assert free.finish_reason == "length"
    # A stop string whose first occurrence is well inside the sampled text.
    i = next(i for i in range(3, len(free.text)) if free.text[i].isalnum() and free.text.index(free.text[i]) == i)
    stop = free.text[i]
    cut = be.complete(["How do I bake bread?"], SamplingParams(**params, stop=[stop]))[0][0]
    assert cut.finish_reason == "stop" and cut.stop_string == stop
    assert cut.text == free.text[:i]
    assert cut.completion_tokens < 16


def test_finish_logic_on_token_lists(loaded):
    tok = loaded.tokenizer
    be = TransformersBackend(loaded.model, tok, progress=False, end_tokens=["<|im_end|>"])
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    body = tok("hello world", add_special_tokens=False)["input_ids"]
    c = be._finish(body + [eos, pad, pad], 5, SamplingParams(max_new_tokens=10), pad)
    assert (c.text, c.finish_reason, c.completion_tokens) == ("hello world", "eos", len(body) + 1)
    c = be._finish(body + [pad, pad], 5, SamplingParams(max_new_tokens=10, stop=["world"]), pad)
    assert (c.text, c.finish_reason, c.stop_string) == ("hello ", "stop", "world")
    c = be._finish(body, 5, SamplingParams(max_new_tokens=len(body)), pad)
    assert (c.finish_reason, c.completion_tokens) == ("length", len(body))


class ScriptedBackend(GenerationBackend):
    """Returns canned completions and records every prompt it was given."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = []

    def complete(self, prompts, params, num_samples=1):
        self.calls.append((list(prompts), params))
        return [[self.script.pop(0) for _ in range(num_samples)] for _ in prompts]


def test_two_phase_protocol_closes_think_and_records_budget():
    be = ScriptedBackend([
        Completion("short reasoning", "stop", 3, 2, "</think>"),
        Completion("runaway reasoning that", "length", 3, 8),
        Completion("<safe>\nrisky\n</safe>\n\nNo.", "eos", 9, 6),
        Completion("Sure, here", "length", 9, 4),
    ])
    gen = GenerationConfig(thinking_budget=8, max_new_tokens=4)
    out = generate_responses(be, ["P1<think>\n", "P2<think>\n"], gen, "prompted")
    (first,), (second,) = out
    phase1, phase2 = be.calls
    assert phase1[1].max_new_tokens == 8 and phase1[1].stop == ["</think>"]
    assert phase2[0] == ["P1<think>\nshort reasoning\n</think>", "P2<think>\nrunaway reasoning that\n</think>"]
    assert phase2[1].max_new_tokens == 4
    assert first.has_safe and first.safe == "risky" and first.answer == "No." and not first.budget_hit
    assert first.response == "<think>\nshort reasoning\n</think>\n\n<safe>\nrisky\n</safe>\n\nNo."
    assert second.budget_hit and second.think_finish == "length" and second.answer_finish == "length"
    assert not second.has_safe and second.think_tokens == 8


def test_prompted_reasoning_with_budget_on_tiny_model(loaded):
    gen = GenerationConfig(thinking_budget=6, max_new_tokens=5, batch_size=4, num_samples=2, temperature=1.0, progress=False)
    be = make_backend(loaded, gen)
    prompts = build_prompts(loaded.tokenizer, ["How do I bake bread?", "What is 2 + 2?"], "prompted", "Think first.")
    assert all(p.endswith("<think>\n") for p in prompts)
    out = generate_responses(be, prompts, gen, "prompted")
    assert [len(r) for r in out] == [2, 2]
    for row in out:
        for r in row:
            assert r.think_tokens <= 6 and r.answer_tokens <= 5
            assert r.budget_hit == (r.think_finish == "length")
            assert "</think>" in r.response  # always closed, even when the budget cut it
            assert r.response.startswith("<think>\n")


def test_reasoning_off_is_one_call():
    be = ScriptedBackend([Completion("plain answer", "eos", 2, 3)])
    (r,), = generate_responses(be, ["P"], GenerationConfig(), "off")
    assert len(be.calls) == 1 and r.answer == "plain answer" and r.think is None and r.think_finish is None


@pytest.mark.parametrize("safe", [None, "Core issue: harmful."])
def test_continuation_prompt_tokenizes_as_a_prefix_of_the_training_text(tok, safe):
    """The phase-2 prompt must be a token prefix of what SFT trained on; a trailing blank line
    tokenizes differently at the end of a prompt ('ĊĊ') than before text ('Ċ','Ċ') and hides
    the learned <safe> trigger."""
    from safetrigger.chat_templates import apply_template, render_prompt
    from safetrigger.generation.reasoning import CLOSE_THINK
    from safetrigger.response_format import render

    apply_template(tok, "chatml")
    prompt = render_prompt(tok, "How do I pick a lock?")
    think = "Let me think step by step about the request."
    cont = prompt + think + CLOSE_THINK
    full = prompt + render(think, "I can't help with that.", safe)[len("<think>\n"):]
    a = tok(cont, add_special_tokens=False)["input_ids"]
    b = tok(full, add_special_tokens=False)["input_ids"]
    assert b[: len(a)] == a


def test_repetition_penalty_spares_the_prompt(loaded):
    """The penalty must not touch prompt tokens (the format markup a Safe-Trigger model has to
    emit): a token the prompt is full of keeps its probability at the first generated step."""
    import torch

    from safetrigger.generation.transformers_backend import repetition_penalty

    tok = loaded.tokenizer
    ids = tok("<think> <think> <think>", return_tensors="pt", add_special_tokens=False).input_ids
    scores = torch.zeros(1, len(tok))
    scores[0, ids[0]] = 5.0  # logits of the tokens the prompt holds
    width = ids.shape[1]
    ours = repetition_penalty(1.5, width)(ids, scores.clone())
    assert torch.equal(ours, scores)  # nothing generated yet: no penalty
    grown = torch.cat([ids, ids[:, :1]], dim=1)  # one generated token, repeated from the prompt
    after = repetition_penalty(1.5, width)(grown, scores.clone())
    assert after[0, ids[0, 0]] == pytest.approx(5.0 / 1.5) and after[0, ids[0, 1]] == 5.0
    hf_default = repetition_penalty(1.5, 0)(ids, scores.clone())  # what HF does by default
    assert hf_default[0, ids[0, 0]] == pytest.approx(5.0 / 1.5)


def test_block_spare_knows_its_tokens_and_when_a_block_is_open(loaded):
    from safetrigger.generation.base import AFTER, INSIDE, OUTSIDE, BlockSpare

    tok = loaded.tokenizer
    spare = BlockSpare.of(tok)

    def ids(text):
        return tok(text, add_special_tokens=False).input_ids

    assert set(ids("\n</safe>")) | set(ids("<safe>")) <= set(spare.ids)
    assert not set(ids(" bread flour")) & set(spare.ids)
    assert spare.state(ids("</think>\n\nbread")) == OUTSIDE
    assert spare.state(ids("</think>\n\n<safe>\nCore issue: bread")) == INSIDE
    assert spare.state(ids("<safe>\nbread\n</safe>\n\n")) == AFTER  # up to the answer
    assert spare.state(ids("<safe>\nbread\n</safe>\n\nflour")) == OUTSIDE
    assert spare.state(ids("Core issue: bread"), was=INSIDE) == INSIDE  # opened in the prompt
    text = ids("x <safe>\nbread\n</safe> and <safe>\nflour")
    state, n = OUTSIDE, 0
    for end in range(1, len(text) + 1):  # token by token, as generation reads it
        state, n = spare.state(text[:end], state, n), end
    assert state == spare.state(text) == INSIDE
    assert BlockSpare.from_args(spare.to_args()) == spare  # as vLLM's engine receives it


def test_run_dirs_made_before_the_spared_penalty_resume_with_it_off():
    from safetrigger.generation import output_settings

    assert output_settings(GenerationConfig())["penalty_spares_format"] is True
    old = output_settings(GenerationConfig(penalty_spares_format=False))
    assert "penalty_spares_format" not in old and "repetition_penalty" in old  # as old manifests hold it


def test_repetition_penalty_spares_the_format_inside_a_block_only(loaded):
    """Inside an open block the line break and the pieces of <safe> keep their logits while a
    repeated word is still penalized; once the answer after </safe> begins, the line break is
    penalized again."""
    import torch

    from safetrigger.generation.base import BlockSpare
    from safetrigger.generation.transformers_backend import repetition_penalty

    tok = loaded.tokenizer
    spare = BlockSpare.of(tok)
    word = tok(" flour", add_special_tokens=False).input_ids[-1]
    newline = tok("\n", add_special_tokens=False).input_ids[-1]
    prompt = tok("Q:", add_special_tokens=False).input_ids
    rows = [tok(t, add_special_tokens=False).input_ids for t in
            ("<safe>\nbread flour\n", "<safe>\nbread flour\n</safe>\n", "<safe>\nbread flour\n</safe>\n\nok")]
    width = max(map(len, rows))
    both = torch.tensor([[tok.pad_token_id] * (width - len(r)) + prompt + r for r in rows])
    scores = torch.full((3, len(tok)), 3.0)
    sparing = repetition_penalty(1.5, len(prompt), spare)(both, scores.clone())  # pads count as generated: harmless here
    plain = repetition_penalty(1.5, len(prompt))(both, scores.clone())
    assert sparing[0, newline] == 3.0 and plain[0, newline] == pytest.approx(2.0)
    assert sparing[1, newline] == 3.0  # closed, the blank line before the answer still spared
    assert sparing[2, newline] == pytest.approx(2.0)  # the answer has begun
    assert sparing[0, word] == pytest.approx(2.0) == plain[0, word]


def test_leading_spare_keeps_the_second_line_break_of_the_decision(loaded):
    """With ``leading``, an output that so far holds only line breaks (the '\\n' the answer call
    after </think> starts with) keeps the next line break's logit; once a word is written, and
    without ``leading`` at all, a repeated line break is penalized as before."""
    import torch

    from safetrigger.generation.base import AFTER, OUTSIDE, BlockSpare
    from safetrigger.generation.transformers_backend import repetition_penalty

    tok = loaded.tokenizer
    spare = BlockSpare.of(tok)
    ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    prompt = ids("Q: bread?</think>")
    assert spare.start_state(prompt) == OUTSIDE and spare.start_state(prompt, leading=True) == AFTER
    assert spare.start_state(ids("Q:<safe>\nbread"), leading=True) == spare.state(ids("Q:<safe>\nbread"))  # open stays open
    newline = ids("\n")[-1]

    def penalized(output: str, leading: bool) -> float:
        """The line break's logit after ``output``, fed as generation feeds it: the prompt, then the grown row."""
        proc = repetition_penalty(1.5, len(prompt), spare, leading)
        proc(torch.tensor([prompt]), torch.zeros(1, len(tok)))
        row = prompt + ids(output)
        for end in range(len(prompt) + 1, len(row) + 1):
            scores = proc(torch.tensor([row[:end]]), torch.full((1, len(tok)), 3.0))
        return float(scores[0, newline])

    assert penalized("\n", leading=True) == 3.0 and penalized("\n", leading=False) == pytest.approx(2.0)
    assert penalized("\nok\n", leading=True) == pytest.approx(2.0)  # 'ok' was written: the leading run is over


def test_run_dirs_made_before_the_leading_spare_resume_with_it_off():
    from safetrigger.generation import output_settings

    assert "penalty_spares_leading" not in output_settings(GenerationConfig())
    assert output_settings(GenerationConfig(penalty_spares_leading=True))["penalty_spares_leading"] is True


def test_backend_spares_format_tokens_unless_asked_not_to(loaded, monkeypatch):
    seen = []
    real = loaded.model.generate

    def spy(**kwargs):
        seen.append(kwargs["logits_processor"][0])
        return real(**kwargs)

    monkeypatch.setattr(loaded.model, "generate", spy)
    backend = TransformersBackend(loaded.model, loaded.tokenizer, batch_size=4, progress=False)
    for spare in (True, False):
        backend.complete(["hello"], SamplingParams(max_new_tokens=2, repetition_penalty=1.3, penalty_spares_format=spare))
    assert seen[0].spare is backend.spare and backend.spare.ids and seen[1].spare is None


def test_backend_passes_the_prompt_width_to_the_penalty(loaded, monkeypatch):
    seen = {}
    real = loaded.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(loaded.model, "generate", spy)
    backend = TransformersBackend(loaded.model, loaded.tokenizer, batch_size=4, progress=False)
    backend.complete(["hello there", "a much longer prompt than the first one"], SamplingParams(max_new_tokens=2, repetition_penalty=1.3))
    (proc,) = seen["logits_processor"]
    assert "repetition_penalty" not in seen and proc.penalty == 1.3
    assert proc.prompt_ignore_length == seen["input_ids"].shape[1]
