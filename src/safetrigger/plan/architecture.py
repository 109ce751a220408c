"""Model sizes for the cost model, without downloading weights.

Read from the model's ``config.json`` when it is on disk (a local directory or the Hugging Face
cache); otherwise from :data:`KNOWN`, a copy of the fields that matter from each paper model's
``config.json`` on the hub (the source is named per entry). Parameter counts are computed from
the shapes (embeddings, attention, gated MLP), so a cached config of any Llama/Qwen-style model
works too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Fields of config.json, copied from the hub (huggingface.co/<id>/blob/main/config.json).
KNOWN: dict[str, dict] = {
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, head_dim=128, intermediate_size=28672, vocab_size=128256, tie_word_embeddings=False),
    "Qwen/Qwen3-8B": dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False),
    "Qwen/Qwen3-32B": dict(hidden_size=5120, num_hidden_layers=64, num_attention_heads=64, num_key_value_heads=8, head_dim=128, intermediate_size=25600, vocab_size=151936, tie_word_embeddings=False),
    "meta-llama/Llama-Guard-3-8B": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False),
    # The embedded demo model (SmolLM2-135M-Instruct, HuggingFaceTB/SmolLM2-135M-Instruct config.json).
    "embedded": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64, intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
}


@dataclass(frozen=True)
class Architecture:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    source: str

    @property
    def params(self) -> int:
        """All parameters: embeddings (+ untied LM head) + per layer attention, gated MLP, norms."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h
        return self.vocab * h * (1 if self.tied else 2) + self.layers * layer + h

    def lora_params(self, r: int) -> int:
        """LoRA on every linear projection of every layer (lora_target all-linear): r x (in + out) each."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return r * per_layer * self.layers

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token, bf16."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


def _from_config(c: dict, source: str) -> Architecture:
    heads = int(c["num_attention_heads"])
    return Architecture(
        hidden=int(c["hidden_size"]), layers=int(c["num_hidden_layers"]), heads=heads,
        kv_heads=int(c.get("num_key_value_heads") or heads),
        head_dim=int(c.get("head_dim") or int(c["hidden_size"]) // heads),
        intermediate=int(c["intermediate_size"]), vocab=int(c["vocab_size"]),
        tied=bool(c.get("tie_word_embeddings", False)), source=source,
    )


def architecture(name_or_path: str, config_path: Path | None = None) -> Architecture | None:
    """Sizes of a model: its config.json when given (found on disk by the resolver), else the
    hub copy in :data:`KNOWN`; None when neither is there."""
    if config_path is not None and config_path.is_file():
        try:
            c = json.loads(config_path.read_text())
            c = c.get("text_config", c)
            return _from_config(c, str(config_path))
        except (KeyError, ValueError, TypeError):
            pass  # an unusual config: fall back to the table
    c = KNOWN.get(name_or_path)
    if c is None:
        return None
    return _from_config(c, "config.json on the hub (copied into safetrigger.plan.architecture.KNOWN)")
