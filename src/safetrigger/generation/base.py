"""The generation interface every backend implements (transformers, vLLM, OpenAI-compatible
servers): rendered prompt text in, completions out; and the one scoring call the yes/no
judgements use (next-token probabilities), implemented by every backend that runs weights.

Text-in/text-out keeps backends interchangeable: chat templates and the reasoning protocol
(see reasoning.py) live above this layer, so a server's /v1/completions endpoint fits as well
as a local model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    """Token budget of this call."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    """Nucleus mass when sampling."""
    stop: list[str] = field(default_factory=list)
    """Stop strings; the matched one is cut from the text and reported."""
    repetition_penalty: float = 1.0
    """>1 discourages repeating tokens (1.0 = off)."""
    penalty_spares_format: bool = True
    """Inside a ``<safe>`` block the repetition penalty leaves line breaks and the tag's tokens
    alone (:class:`BlockSpare`)."""
    penalty_spares_leading: bool = False
    """Also spare them at the start of the call's output, up to its first other token
    (:meth:`BlockSpare.start_state`); needs ``penalty_spares_format``."""
    seed: int = 0
    """Seed for sampling (backends document their reproducibility scope)."""


@dataclass
class Completion:
    text: str
    """Generated text, without the stop string or end-of-turn token."""
    finish_reason: str
    """'stop' (a stop string matched), 'eos' (end of turn), or 'length' (budget hit)."""
    prompt_tokens: int
    completion_tokens: int
    stop_string: str | None = None
    """Which stop string ended it, if any."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NextToken:
    """The model's next-token distribution after one prompt, as much of it as a scorer needs."""

    probs: dict[int, float]
    """P(token) at the next position for each requested token id (softmax of the raw logits)."""
    top: list[tuple[int, float]]
    """The most likely next tokens (id, P), best first: five from transformers, the argmax from vLLM."""


class TextDeltas:
    """New token ids of one completion in, new text out, for streaming: the ids since the last
    newline are decoded together (a token's leading space and multi-byte characters depend on
    its neighbours), and text ending in an incomplete UTF-8 character is held back. Decoded as
    :func:`completion_from_ids` decodes the finished reply (special tokens kept, nothing from
    the first end-of-turn token on), so the pieces add up to its text."""

    def __init__(self, tokenizer, end_ids):
        self.tokenizer, self.end_ids = tokenizer, set(end_ids)
        self.window: list[int] = []
        self.flushed = ""
        self.sent = 0
        self.ended = False

    def feed(self, ids: list[int]) -> str:
        if self.ended:
            return ""
        for i, t in enumerate(ids):
            if t in self.end_ids:
                ids, self.ended = ids[:i], True
                break
        self.window.extend(ids)
        piece = self.tokenizer.decode(self.window, skip_special_tokens=False)
        if piece.endswith("\ufffd"):
            return ""
        text = self.flushed + piece
        if piece.endswith("\n"):
            self.flushed, self.window = text, []
        delta, self.sent = text[self.sent:], max(self.sent, len(text))
        return delta


class GenerationCancelled(Exception):
    """Raised inside a backend's generate loop when its ``should_stop`` says so (a server
    request past its timeout): the engine is freed at the next token, not after the reply."""


class GenerationBackend(ABC):
    """Generates completions for already-rendered prompts."""

    name: str = "backend"
    streams_tokens: bool = False
    """Whether :meth:`complete` takes ``on_text`` (text deltas of a single completion, as the
    engine produces them) and ``should_stop`` (checked every token; True aborts with
    :class:`GenerationCancelled`). Backends without it generate whole replies."""

    def next_token_probs(self, prompts: list[str], token_ids: list[int]) -> list[NextToken]:
        """P of each of ``token_ids`` as the next token after each prompt (yes/no rubrics, the
        latent-awareness audit, a judge's verdict token)."""
        from safetrigger.errors import ModelError

        raise ModelError(f"the {self.name} backend cannot read next-token probabilities: "
                         "use generation.backend transformers or vllm for rubric scoring and the probe")

    def next_token_entropies(self, seqs: list[list[int]]) -> list[float]:
        """Entropy (nats) of the full next-token distribution after each token-id sequence
        (the first-answer-token entropy of the evaluation)."""
        from safetrigger.errors import ModelError

        raise ModelError(f"the {self.name} backend cannot read next-token distributions (entropy): "
                         "set eval.entropy false or use generation.backend transformers or vllm")

    @abstractmethod
    def complete(self, prompts: list[str], params: SamplingParams, num_samples: int = 1) -> list[list[Completion]]:
        """For each prompt, ``num_samples`` completions (outer list aligned with ``prompts``)."""

    def identity(self) -> dict:
        """What generated the text, for manifests."""
        return {"backend": self.name}


def end_token_ids(tokenizer, end_tokens: list[str] | None) -> list[int]:
    """Ids that close a completion: the tokenizer's eos plus each family end-of-turn token the
    vocabulary has (unknown ones are skipped)."""
    ids = {tokenizer.eos_token_id}
    for t in end_tokens or []:
        tid = tokenizer.convert_tokens_to_ids(t)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


# Text whose tokens are the response format's structure rather than content.
FORMAT_TEXTS = ("\n", "\n\n", " \n", "<safe>", "</safe>", "\n</safe>")


@dataclass(frozen=True)
class BlockSpare:
    """Which token ids the repetition penalty spares, and when: line breaks and the pieces of
    ``<safe>``/``</safe>``, while a ``<safe>`` block is open and up to the answer after it
    (``SamplingParams.penalty_spares_format``).

    Why: a block repeats its structure by design: a line break ends every line, and ``</safe>``
    repeats the ``safe`` and ``>`` of ``<safe>``. Penalized, each line end and the close get
    less likely, so a trained model ran its lines on and rarely closed the block (dev: 14 % of
    advbench-dev blocks complete, 50 % spared). Pass ② writes each scaffold line in a call of
    its own, where the penalty has seen nothing, so training data and inference disagreed on
    exactly these tokens. Only around the block: spared everywhere, line breaks let a plain
    answer loop back into ``\n</think>`` (63 of 160 general pass-① rows malformed against 35)."""

    ids: tuple[int, ...] = ()
    opens: tuple[tuple[int, ...], ...] = ()
    closes: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def of(cls, tokenizer) -> "BlockSpare":
        def enc(text):
            return tuple(tokenizer(text, add_special_tokens=False).input_ids)

        nl = enc("\n")

        def forms(tag):  # the tag alone, and as it tokenizes after a line break
            after = enc("\n" + tag)
            return tuple({enc(tag), after[len(nl):] if after[: len(nl)] == nl else after})

        ids = sorted({i for text in FORMAT_TEXTS for i in enc(text)})
        return cls(tuple(ids), forms("<safe>"), forms("</safe>"))

    def to_args(self) -> dict:
        """Plain lists, for a request's extra_args (vLLM's engine rebuilds it: :meth:`from_args`)."""
        return {"ids": list(self.ids), "opens": [list(p) for p in self.opens], "closes": [list(p) for p in self.closes]}

    @classmethod
    def from_args(cls, args: dict) -> "BlockSpare":
        return cls(tuple(args["ids"]), tuple(map(tuple, args["opens"])), tuple(map(tuple, args["closes"])))

    def start_state(self, prompt_ids, leading: bool = False) -> int:
        """The state the output starts in: the prompt's, or with ``leading`` ``AFTER`` where the
        prompt ends outside a block, so the output's first line breaks and tag pieces are spared
        up to its first other token.

        Why: the answer call after ``</think>`` begins with the decision, and every SFT row
        writes it as ``\n``, ``\n``, then ``<safe>`` or the answer. Penalized (output-only, 1.2,
        then temperature 0.7), the second ``\n`` fell from P 0.94 to about 0 on the demo ST-S,
        so sampling decided at the position before it instead, among ``<``, ``</`` (another
        ``</think>``) and the answer's words: a distribution SFT never trained, in place of the
        learned P(``<safe>``). ``scripts/trigger_probability.py --sampled`` measures both."""
        state = self.state(prompt_ids)
        return AFTER if leading and state == OUTSIDE else state

    def state(self, ids, was: int = 0, start: int = 0) -> int:
        """Where ``ids`` end relative to a block: ``OUTSIDE``, ``INSIDE``, or ``AFTER`` (``</safe>``
        and nothing but line breaks since), given the state ``was`` after ``ids[:start]``.
        Generation passes the previous length as ``start``, so each step reads only its new token."""
        state = was
        for end in range(start + 1, len(ids) + 1):
            if any(tuple(ids[max(0, end - len(p)) : end]) == p for p in self.opens):
                state = INSIDE
            elif any(tuple(ids[max(0, end - len(p)) : end]) == p for p in self.closes):
                state = AFTER
            elif state == AFTER and ids[end - 1] not in self.ids:
                state = OUTSIDE
        return state


# Where generation stands relative to a <safe> block (BlockSpare.state). The penalty spares the
# format's tokens INSIDE and AFTER: the blank line between </safe> and the answer is the format's
# too, and penalized, the trained model ended its turn right after </safe> instead (dev: 20 of
# 28 complete blocks on advbench-dev had no answer).
OUTSIDE, INSIDE, AFTER = 0, 1, 2


def completion_from_ids(tokenizer, gen: list[int], end_ids, prompt_len: int, params: SamplingParams,
                        pad_id: int | None = None) -> Completion:
    """A completion from generated token ids, the same way for every local backend: it ends at
    the first end-of-turn token, or where a pad tail starts (HF pads rows finished early), and
    a stop string cuts the decoded text where it first occurs."""
    tail = len(gen)
    while pad_id is not None and tail > 0 and gen[tail - 1] == pad_id:
        tail -= 1
    end = next((i for i, t in enumerate(gen[:tail]) if t in end_ids), tail)
    text = tokenizer.decode(gen[:end], skip_special_tokens=False)
    hits = [(text.find(s), s) for s in params.stop if s in text]
    if hits:
        pos, s = min(hits)
        return Completion(text[:pos], "stop", prompt_len, end, s)
    if end < len(gen) and gen[end] in end_ids:
        return Completion(text, "eos", prompt_len, end + 1)
    return Completion(text, "length", prompt_len, end)
