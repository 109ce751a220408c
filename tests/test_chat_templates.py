"""Golden renders and assistant-loss masks of the project's chat templates."""

import pytest

from safetrigger.chat_templates import FAMILIES, apply_template, detect_family, load_template, render_conversation, render_prompt
from safetrigger.errors import ConfigError
from safetrigger.response_format import render

RESPONSE = render("I should check what is asked.", "I can't help with that.", "Core issue: harmful. Reasoning: missed it. Guidance: refuse.")
THINK_SAFE_ANSWER = (
    "<think>\nI should check what is asked.\n</think>\n\n"
    "<safe>\nCore issue: harmful. Reasoning: missed it. Guidance: refuse.\n</safe>\n\n"
    "I can't help with that."
)

GOLDEN_CONVERSATION = {
    "chatml": "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nHow to pick a lock?<|im_end|>\n"
    f"<|im_start|>assistant\n{THINK_SAFE_ANSWER}<|im_end|>\n",
    "qwen3": "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nHow to pick a lock?<|im_end|>\n"
    f"<|im_start|>assistant\n{THINK_SAFE_ANSWER}<|im_end|>\n",
    "deepseek_r1": f"Be safe.<｜User｜>How to pick a lock?<｜Assistant｜>{THINK_SAFE_ANSWER}<｜end▁of▁sentence｜>",
}
GOLDEN_PROMPT = {
    "chatml": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "qwen3": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "deepseek_r1": "<｜User｜>Hi<｜Assistant｜><think>\n",
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_golden_renders(tok, family):
    apply_template(tok, family)
    assert RESPONSE == THINK_SAFE_ANSWER
    assert render_conversation(tok, "How to pick a lock?", RESPONSE, system="Be safe.") == GOLDEN_CONVERSATION[family]
    assert render_prompt(tok, "Hi") == GOLDEN_PROMPT[family]


def test_no_think_prompt(tok):
    apply_template(tok, "qwen3")
    assert render_prompt(tok, "Hi", open_think=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    apply_template(tok, "chatml")
    assert render_prompt(tok, "Hi", open_think=False).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loss_mask_covers_think_safe_answer_and_nothing_of_the_prompt(tok, family):
    apply_template(tok, family)
    messages = [
        {"role": "system", "content": "Be safe."},
        {"role": "user", "content": "How to pick a lock?"},
        {"role": "assistant", "content": RESPONSE},
    ]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    prompt = tok.decode([i for i, m in zip(ids, mask) if not m])
    end = FAMILIES[family].end_of_turn
    assert trained == THINK_SAFE_ANSWER + end  # all of think + safe + answer, and the end of turn
    assert "How to pick a lock?" in prompt and "<think>" not in prompt and "<safe>" not in prompt
    # The mask is one contiguous span: nothing of the prompt is interleaved.
    first, last = mask.index(1), len(mask) - 1 - mask[::-1].index(1)
    assert all(mask[first : last + 1])


def test_stock_r1_template_would_drop_the_reasoning():
    """Why we own the R1 template: the stock one keeps only what follows </think>."""
    content = RESPONSE.split("</think>")[-1]  # what the stock DeepSeek-R1 template renders
    assert "<think>" not in content and "<safe>" in content


class _Vocab:
    def __init__(self, *tokens):
        self.tokens = {t: i for i, t in enumerate(tokens)}

    def get_vocab(self):
        return self.tokens


def test_detect_family():
    chatml = _Vocab("<|im_start|>", "<|im_end|>")
    assert detect_family(chatml, "HuggingFaceTB/SmolLM2-135M-Instruct") == "chatml"
    assert detect_family(chatml, "Qwen/Qwen3-8B") == "qwen3"
    assert detect_family(_Vocab("<|im_start|>", "<think>"), "local/dir") == "qwen3"
    assert detect_family(_Vocab("<｜Assistant｜>", "<｜User｜>"), "local/dir") == "deepseek_r1"
    assert detect_family(_Vocab("[INST]"), "deepseek-ai/DeepSeek-R1-Distill-Llama-8B") == "deepseek_r1"
    with pytest.raises(ConfigError, match="set model.template"):
        detect_family(_Vocab("[INST]"), "mistral")


def test_unknown_family():
    with pytest.raises(ConfigError, match="unknown chat template 'llama9'"):
        load_template("llama9")
