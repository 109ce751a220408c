"""sft.decision_weight: the decision token (first after </think>) is found exactly, its loss is
weighted and nothing else changes, and training with it moves that token more than plain SFT."""

import pytest
import torch

from safetrigger.errors import ConfigError, SafeTriggerError
from safetrigger.training import SFTConfig
from safetrigger.training import sft as sft_mod
from safetrigger.training.config import fingerprinted
from safetrigger.training.data import read_sft_rows
from safetrigger.training.decision import decision_char, decision_weighted_loss

from test_training_sft import FAST, GENERAL, RISKY, model_cfg, rows, write


@pytest.mark.parametrize("content, expected", [
    ("<think>\na\n</think>\n\n<safe>x</safe>\n\nok", "<"),
    ("<think>a</think>Sure", "S"),
    ("<think>a</think> x </think>\n 4", "4"),  # the last </think> counts
    ("no reasoning", None),
    ("<think>a</think>\n\n", None),  # nothing after it
])
def test_decision_char(content, expected):
    at = decision_char(content)
    assert (content[at] if at is not None else None) == expected


def test_weight_one_is_the_plain_loss_and_a_weight_adds_that_token_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5, 6], [-100, 7, 8, 9, -100, -100]])
    decision = torch.tensor([3, -1])
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(decision_weighted_loss(logits, labels, decision, 1.0), plain)
    nll_at = torch.nn.functional.cross_entropy(logits[0, 2:3], labels[0, 3:4])  # label 3 predicted at position 2
    n = int((labels[:, 1:] != -100).sum())
    assert torch.allclose(decision_weighted_loss(logits, labels, decision, 5.0), plain + 4 * nll_at / n)
    assert torch.allclose(decision_weighted_loss(logits, labels, decision, 5.0, num_items=20), (plain * n + 4 * nll_at) / 20)


def build(tiny_model_dir, tmp_path, items, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    examples = read_sft_rows(write(tmp_path / "sft.jsonl", items))
    cfg = SFTConfig(**{**FAST, **kw})
    args = sft_mod.sft_training_args(cfg, tmp_path / "ckpt", 512, use_cpu=True)
    trainer, _ = sft_mod.build_sft_trainer(model_cfg(tiny_model_dir), cfg, args, examples)
    return trainer, examples


def test_the_table_points_at_the_block_or_the_answer(tiny_model_dir, tmp_path):
    trainer, examples = build(tiny_model_dir, tmp_path, rows(), decision_weight=3.0)
    tok = trainer.processing_class
    assert trainer.decision_weight == 3.0 and len(trainer.decision_positions) == len(examples)
    for ex, row in zip(examples, trainer.train_dataset):
        at = trainer.decision_positions[tuple(row["input_ids"])]
        after = tok.decode(row["input_ids"][at:])
        expected = "<safe>" if ex.id.startswith("harm") else "The answer"
        assert after.startswith(expected) and row["labels"][at] != -100, (ex.id, after[:20])
        assert "</think>" in tok.decode(row["input_ids"][:at])


def test_plain_sft_keeps_trls_trainer(tiny_model_dir, tmp_path):
    trainer, _ = build(tiny_model_dir, tmp_path, rows())
    assert not hasattr(trainer, "decision_positions")


def test_a_row_without_a_decision_is_refused(tiny_model_dir, tmp_path):
    items = rows() + [{"id": "bare", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}]
    with pytest.raises(SafeTriggerError, match="'bare'.*decision"):
        build(tiny_model_dir, tmp_path, items, decision_weight=3.0)


def decision_log_prob(model, trainer):
    """Mean log-probability of every row's decision token under ``model``."""
    out = []
    for row in trainer.train_dataset:
        ids = torch.tensor([row["input_ids"]])
        at = trainer.decision_positions[tuple(row["input_ids"])]
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0, at - 1].log_softmax(-1)[ids[0, at]]
        out.append(float(logp))
    return sum(out) / len(out)


def test_a_weight_moves_the_decision_token_more_than_plain_sft(tiny_model_dir, tmp_path):
    """Same data, seed and steps: the weighted loss raises P(decision token) more."""
    gains = {}
    for weight in (1.0001, 50.0):  # 1.0001: the weighted trainer itself, with (almost) plain loss
        trainer, _ = build(tiny_model_dir, tmp_path / str(weight), rows(), decision_weight=weight, max_steps=4, use_lora=False, learning_rate=3e-3)
        before = decision_log_prob(trainer.model, trainer)
        trainer.train()
        gains[weight] = decision_log_prob(trainer.model, trainer) - before
    assert gains[50.0] > gains[1.0001] + 0.15, gains  # measured: 0.57 against 0.31


def test_validation_and_fingerprint():
    with pytest.raises(ConfigError, match="decision_weight"):
        SFTConfig(decision_weight=0).validate()
    # at its default the field is left out, so runs made before it existed still resume
    assert "decision_weight" not in fingerprinted(SFTConfig())
    assert fingerprinted(SFTConfig(decision_weight=4.0))["decision_weight"] == 4.0
    assert "resume" not in fingerprinted(SFTConfig(), ("resume",))
