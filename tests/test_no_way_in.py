"""No way in: remote code stays off unless asked, and tests never reach a model hub."""

import os
import re
from pathlib import Path

import pytest

from safetrigger.config import ModelConfig, load_config
from safetrigger.errors import ModelError

SRC = Path(__file__).resolve().parents[1] / "src" / "safetrigger"


def test_trust_remote_code_is_off_by_default_everywhere():
    assert ModelConfig().trust_remote_code is False
    assert load_config(None).model.trust_remote_code is False
    # No code path turns it on by itself.
    hits = [f"{f.relative_to(SRC)}:{n}" for f in SRC.rglob("*.py") for n, line in enumerate(f.read_text().splitlines(), 1)
            if re.search(r"trust_remote_code\s*=\s*True", line)]
    assert hits == []


@pytest.mark.parametrize("asked", [False, True])
def test_loader_passes_trust_remote_code_only_when_asked(tiny_model_dir, monkeypatch, asked):
    import transformers

    seen = []
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def spy(real):
        def call(*a, **kw):
            seen.append(kw.get("trust_remote_code"))
            return real(*a, **kw)
        return call

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy(real_model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy(real_tok))
    from safetrigger.models import load_model

    load_model(ModelConfig(name_or_path=str(tiny_model_dir), template="chatml", device="cpu", dtype="float32", trust_remote_code=asked))
    assert seen and all(v is asked for v in seen)


def test_hub_access_is_off_in_tests():
    import huggingface_hub
    from huggingface_hub import constants

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and constants.HF_HUB_OFFLINE
    with pytest.raises(Exception) as info:  # offline: refused locally, no connection attempted
        huggingface_hub.hf_hub_download("some-org/never-downloaded-model", "config.json", cache_dir="/nonexistent-cache")
    assert "offline" in f"{type(info.value).__name__} {info.value}".lower() or "LocalEntryNotFound" in type(info.value).__name__


def test_a_hub_id_fails_fast_with_a_model_error_offline(tmp_path):
    from safetrigger.models import load_model

    with pytest.raises(ModelError, match="cannot load tokenizer from 'some-org/never-downloaded-model'"):
        load_model(ModelConfig(name_or_path="some-org/never-downloaded-model", cache_dir=str(tmp_path), device="cpu"))
