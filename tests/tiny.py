"""Tiny, offline stand-ins for real models: a byte-level BPE tokenizer trained in memory on a
few sentences, and a 2-layer random Llama built from a config. Built in well under a second.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# Special tokens of every chat template family we own, so one tokenizer serves all goldens.
SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "<think>\nLet me think step by step about the request.\n</think>\n\n",
    "<safe>\nCore issue: the request asks for harmful instructions. Reasoning: I missed the risk. Guidance: refuse.\n</safe>\n\n",
    "I can't help with that, but here is a safer alternative.",
    "user assistant system You are a helpful assistant. What is 2 + 2? The answer is 4.",
    "How do I bake bread? Mix flour, water, salt and yeast, then bake it.",
]


@lru_cache(maxsize=None)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok.to_str()


def tiny_tokenizer():
    """A fresh PreTrainedTokenizerFast (ChatML template set, pad = eos = <|im_end|>)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
    )
    return tok


def tiny_model(tokenizer, seed: int = 0):
    """A 2-layer random LlamaForCausalLM sized to ``tokenizer``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def save_tiny(path: Path, seed: int = 0) -> Path:
    """Write a tiny model + tokenizer (ChatML template) to ``path``, loadable by from_pretrained."""
    from safetrigger.chat_templates import load_template

    tok = tiny_tokenizer()
    tok.chat_template = load_template("chatml")
    model = tiny_model(tok, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)
