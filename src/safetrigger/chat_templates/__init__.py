"""Project-owned chat templates, one jinja file per model family.

Why own them: stock templates are written for inference. DeepSeek-R1's drops everything
before ``</think>`` from assistant turns, so SFT on it silently trains on answers without
reasoning or ``<safe>`` block. Ours keep assistant content verbatim and wrap it in
``{% generation %}`` so ``return_assistant_tokens_mask`` (TRL's ``assistant_only_loss``) covers
exactly think + safe + answer + end-of-turn.

Every template's generation prompt ends with ``<think>\\n`` (``open_think=False`` turns that
off), so completions always start inside the reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from safetrigger.errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str
    """Template file stem."""
    end_of_turn: str
    """Token that closes an assistant turn (the stop token for generation)."""
    native_reasoning: bool
    """The model family reasons in <think> by itself (else we prompt it to)."""
    markers: tuple[str, ...]
    """Vocabulary entries that identify the family."""


FAMILIES = {
    "deepseek_r1": Family("deepseek_r1", "<｜end▁of▁sentence｜>", True, ("<｜Assistant｜>",)),
    "qwen3": Family("qwen3", "<|im_end|>", True, ("<|im_start|>", "<think>")),
    "chatml": Family("chatml", "<|im_end|>", False, ("<|im_start|>",)),
}


def load_template(family: str) -> str:
    """The jinja source of a family's template."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown chat template '{family}' (choose one of: {', '.join(FAMILIES)})")
    return resources.files(__package__).joinpath(f"{family}.jinja").read_text(encoding="utf-8")


def detect_family(tokenizer, name_or_path: str = "") -> str:
    """Guess the family from the tokenizer vocabulary and the model name."""
    vocab = tokenizer.get_vocab()
    name = name_or_path.lower()
    if "<｜Assistant｜>" in vocab or "deepseek-r1" in name:
        return "deepseek_r1"
    if "<|im_start|>" in vocab:
        # Qwen3 has <think> as a single vocabulary entry; plain ChatML models do not.
        return "qwen3" if ("<think>" in vocab or "qwen3" in name) else "chatml"
    raise ConfigError(
        f"cannot tell the chat template family of '{name_or_path}': set model.template to one of {', '.join(FAMILIES)}"
    )


def apply_template(tokenizer, family: str) -> None:
    """Install a family's template on ``tokenizer`` (its stock template is replaced)."""
    tokenizer.chat_template = load_template(family)


def render_prompt(tokenizer, query: str, system: str | None = None, open_think: bool = True) -> str:
    """Prompt text for one user query, ending where the model's reply starts."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": query}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, open_think=open_think)


def render_direct_prompt(tokenizer, family: str, text: str) -> str:
    """Prompt for a short direct reply (a rubric or audit question), no reasoning: the reply
    starts right after the generation prompt. R1-style templates force a ``<think>`` block, so
    an empty one is written for them (the convention of their "no thinking" mode)."""
    prompt = render_prompt(tokenizer, text, system=None, open_think=False)
    return prompt + "<think>\n\n</think>\n\n" if family == "deepseek_r1" else prompt


def render_conversation(tokenizer, query: str, response: str, system: str | None = None) -> str:
    """Full training text: prompt + assistant response (think + safe + answer) + end of turn."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": query},
        {"role": "assistant", "content": response},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False)
