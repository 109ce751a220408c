"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE makes an accidental
download fail fast instead of hanging."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

from tiny import save_tiny, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random Llama + tiny BPE tokenizer saved like a hub checkout (ChatML family)."""
    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tok():
    return tiny_tokenizer()
