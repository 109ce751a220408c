"""Reasoning with a thinking budget, for LRMs and for models that don't reason natively.

Protocol (same for ``native`` and ``prompted`` reasoning):

1. The prompt ends with ``<think>\\n`` (all project templates open it).
2. Phase 1 generates up to ``thinking_budget`` tokens, stopping at ``</think>``.
   Hitting the budget is recorded as ``budget_hit`` (caps runaway LRM traces); a model that
   ends its turn inside the reasoning (common for prompted chat models) is recorded as
   ``think_finish='eos'``.
3. The reasoning is closed (``\\n</think>``) and phase 2 generates everything after it
   — for a Safe-Trigger-trained model that is ``<safe>…</safe>`` plus the answer — up to
   ``max_new_tokens``.

``off`` skips reasoning: the prompt opens no ``<think>`` and one call produces the answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from safetrigger.chat_templates import render_prompt
from safetrigger.config import GenerationConfig
from safetrigger.generation.base import GenerationBackend, SamplingParams
from safetrigger.response_format import THINK_CLOSE, parse, render

# The continuation prompt ends right after '</think>': the blank line that follows is left to
# the model. A prompt ending in '\n\n' tokenizes it as one 'ĊĊ' token, while training text
# ('</think>\n\n<safe>' or '</think>\n\nAnswer') has 'Ċ','Ċ' there — a prompt the trained
# model has never seen, which silently suppresses the learned <safe> trigger.
CLOSE_THINK = f"\n{THINK_CLOSE}"


@dataclass
class Response:
    prompt_index: int
    sample_index: int
    response: str
    """Full assistant text in canonical form: <think>…</think> then everything after it."""
    think: str | None
    safe: str | None
    answer: str
    think_finish: str | None
    """Phase-1 finish: 'stop' (closed </think>), 'eos' (turn ended inside reasoning), 'length' (budget hit)."""
    answer_finish: str
    """Phase-2 finish: 'eos', 'stop' or 'length' (answer truncated by max_new_tokens)."""
    budget_hit: bool
    has_safe: bool
    """A complete <safe>…</safe> block stands after </think>."""
    issues: list[str]
    """Parser issue codes (see response_format)."""
    prompt_tokens: int
    think_tokens: int
    answer_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def sampling(
    gen: GenerationConfig, max_new_tokens: int, stop: list[str], temperature: float | None = None, seed: int | None = None
) -> SamplingParams:
    """Sampling settings of one call from the generation config (temperature/seed overridable)."""
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=gen.temperature if temperature is None else temperature,
        top_p=gen.top_p,
        stop=stop,
        seed=gen.seed if seed is None else seed,
        repetition_penalty=gen.repetition_penalty,
        penalty_spares_format=gen.penalty_spares_format,
        penalty_spares_leading=gen.penalty_spares_leading,
    )


def generate_responses(
    backend: GenerationBackend,
    prompts: list[str],
    gen: GenerationConfig,
    reasoning: str,
    num_samples: int | None = None,
    think_prefixes: list[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[list[Response]]:
    """Two-phase generation for already-rendered prompts (which end with ``<think>\\n``
    unless ``reasoning == 'off'``). Returns ``num_samples`` responses per prompt.

    ``think_prefixes``: per prompt, text prefilled at the start of the reasoning ("" = none);
    the model continues it, and the stored reasoning is prefix + continuation (token counts are
    of the generated part only). ``should_stop``: checked every token by backends that can (a
    server's request timeout)."""
    n = num_samples or gen.num_samples
    extra = {"should_stop": should_stop} if should_stop is not None and backend.streams_tokens else {}
    if reasoning == "off":
        outs = backend.complete(prompts, sampling(gen, gen.max_new_tokens, list(gen.stop)), n, **extra)
        return [[_assemble(i, s, None, c) for s, c in enumerate(row)] for i, row in enumerate(outs)]

    pre = think_prefixes or [""] * len(prompts)
    prompts = [p + x for p, x in zip(prompts, pre)]
    phase1 = backend.complete(prompts, sampling(gen, gen.thinking_budget, [THINK_CLOSE]), n, **extra)
    flat = [(i, s, c) for i, row in enumerate(phase1) for s, c in enumerate(row)]
    # Each sample continues from its own reasoning, so phase 2 runs one row per sample.
    cont = [prompts[i] + c.text.rstrip() + CLOSE_THINK for i, _, c in flat]
    phase2 = backend.complete(cont, sampling(gen, gen.max_new_tokens, list(gen.stop)), 1, **extra)
    out: list[list[Response]] = [[None] * n for _ in prompts]  # type: ignore[list-item]
    for (i, s, think), (answer,) in zip(flat, phase2):
        out[i][s] = _assemble(i, s, think, answer, pre[i])
    return out


def stream_response(backend: GenerationBackend, prompt: str, gen: GenerationConfig, reasoning: str,
                    on_text: Callable[[str, str], None], should_stop: Callable[[], bool] | None = None) -> Response:
    """One response, generated as :func:`generate_responses` does, with ``on_text(phase,
    delta)`` called as the engine produces text (phase ``"think"`` then ``"answer"``). A
    backend that cannot stream (``streams_tokens`` false) gives each phase's text in one piece."""

    def run(p: str, params: SamplingParams, phase: str):
        if backend.streams_tokens:
            [[c]] = backend.complete([p], params, 1, on_text=lambda d: on_text(phase, d), should_stop=should_stop)
        else:
            [[c]] = backend.complete([p], params, 1)
            on_text(phase, c.text)
        return c

    if reasoning == "off":
        return _assemble(0, 0, None, run(prompt, sampling(gen, gen.max_new_tokens, list(gen.stop)), "answer"))
    think = run(prompt, sampling(gen, gen.thinking_budget, [THINK_CLOSE]), "think")
    answer = run(prompt + think.text.rstrip() + CLOSE_THINK, sampling(gen, gen.max_new_tokens, list(gen.stop)), "answer")
    return _assemble(0, 0, think, answer)


def _assemble(i: int, s: int, think, answer, prefix: str = "") -> Response:
    think_text = (prefix + think.text).strip() if think is not None else None
    text = (render(think_text, "") + answer.text.strip()) if think is not None else answer.text.strip()
    parsed = parse(text)
    return Response(
        prompt_index=i,
        sample_index=s,
        response=text,
        think=parsed.think,
        safe=parsed.safe,
        answer=parsed.answer,
        think_finish=think.finish_reason if think is not None else None,
        answer_finish=answer.finish_reason,
        budget_hit=bool(think is not None and think.finish_reason == "length"),
        has_safe=parsed.safe_complete,
        issues=parsed.issues,
        prompt_tokens=(think or answer).prompt_tokens,
        think_tokens=think.completion_tokens if think is not None else 0,
        answer_tokens=answer.completion_tokens,
    )


def build_prompts(tokenizer, queries: list[str], reasoning: str, system: str | None) -> list[str]:
    return [render_prompt(tokenizer, q, system=system, open_think=reasoning != "off") for q in queries]
