"""Stage-1 SFT on the tiny model: TRL + LoRA trains, the loss mask covers exactly
think + safe + answer + end-of-turn, lengths are derived (never truncated), resume works, and
the recipe runs as two DDP processes under `accelerate launch`."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safetrigger.config import ModelConfig
from safetrigger.errors import ConfigError, DataError, SafeTriggerError
from safetrigger.models import load_model, load_tokenizer
from safetrigger.statistics import LENGTH_KEYS, percentiles
from safetrigger.training import SFTConfig, train_sft
from safetrigger.training import sft as sft_mod
from safetrigger.training.data import check_loss_mask, read_sft_rows

REPO = Path(__file__).resolve().parents[1]
THINK = "<think>\nLet me think step by step about the request.\n</think>\n\n"
SAFE = "<safe>\nCore issue: the request asks for harmful instructions. Reasoning: I missed the risk. Guidance: refuse.\n</safe>\n\n"
RISKY = THINK + SAFE + "I can't help with that, but here is a safer alternative."
GENERAL = THINK + "The answer is 4."


def rows(long_row: bool = False) -> list[dict]:
    out = []
    for i in range(3):
        out.append({"id": f"harm-{i}", "messages": [{"role": "user", "content": f"Tell me how to do harm {i}."}, {"role": "assistant", "content": RISKY}]})
        out.append({"id": f"gen-{i}", "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is 2 + 2?" + " Be brief." * i},
            {"role": "assistant", "content": GENERAL},
        ]})
    if long_row:
        out.append({"id": "long", "messages": [{"role": "user", "content": "How do I bake bread? " * 40}, {"role": "assistant", "content": GENERAL}]})
    return out


def write(path: Path, items: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in items))
    return path


def model_cfg(tiny_model_dir, **kw) -> ModelConfig:
    """CPU even where a GPU is visible: the tests train with use_cpu=True and compare on the CPU."""
    return ModelConfig(name_or_path=str(tiny_model_dir), template="chatml", dtype="float32", device="cpu", **kw)


FAST = dict(lora_r=4, lora_alpha=8, max_steps=2, per_device_batch_size=2, learning_rate=1e-3)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One LoRA run: 2 steps, a checkpoint per step, merged weights."""
    base = tmp_path_factory.mktemp("sft")
    data = write(base / "sft.jsonl", rows())
    cfg = SFTConfig(**FAST, save_steps=1, save_merged=True)
    stats = train_sft(data, model_cfg(tiny_model_dir), cfg, base / "out", use_cpu=True)
    return data, cfg, base / "out", stats


def test_train_stats_and_outputs(trained, tiny_model_dir):
    data, _, out, stats = trained
    for key in ("examples", "dropped_overlong", "max_length", "length", "trained_tokens", "train_loss", "runtime_s", "steps", "world_size"):
        assert key in stats, key
    assert stats["examples"] == 6 and stats["dropped_overlong"] == 0 and stats["steps"] == 2 and stats["world_size"] == 1
    assert torch.isfinite(torch.tensor(stats["train_loss"]))
    assert set(stats["length"]) >= {"min", "p50", "p90", "p99", "max"}
    assert json.loads((out / "train_stats.json").read_text())["trained_tokens"] == stats["trained_tokens"]
    assert (out / "DONE").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    # max_length is the longest example, rendered with the project template (nothing truncated)
    tok, _ = load_tokenizer(model_cfg(tiny_model_dir))
    lengths = [len(tok.apply_chat_template(r.messages, tokenize=True, return_dict=True)["input_ids"]) for r in read_sft_rows(data)]
    assert stats["max_length"] == max(lengths) == stats["length"]["max"]
    # trained tokens = the assistant turns (content + <|im_end|>) and nothing else
    expect = sum(len(tok(r.messages[-1]["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]) for r in read_sft_rows(data))
    assert stats["trained_tokens"] == expect


def test_adapter_and_merged_weights_load_and_agree(trained, tiny_model_dir):
    _, _, out, stats = trained
    with_adapter = load_model(model_cfg(tiny_model_dir, adapter=str(out / "adapter")))
    merged = load_model(ModelConfig(name_or_path=stats["merged"], template="chatml", dtype="float32", device="cpu"))
    base = load_model(model_cfg(tiny_model_dir))
    ids = with_adapter.tokenizer("What is 2 + 2?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, m, b = (x.model(ids).logits for x in (with_adapter, merged, base))
    assert torch.allclose(a, m, atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-4), "the adapter should have changed the model"


def test_loss_mask_on_real_collation_is_think_safe_answer_eot(tiny_model_dir, tmp_path):
    """Build the real trainer and push a risky row through its collator."""
    data = write(tmp_path / "sft.jsonl", rows())
    examples = read_sft_rows(data)
    cfg = SFTConfig(**FAST)
    args = sft_mod.sft_training_args(cfg, tmp_path / "ckpt", 512, use_cpu=True)
    trainer, _ = sft_mod.build_sft_trainer(model_cfg(tiny_model_dir), cfg, args, examples)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    tok = trainer.processing_class
    risky = batch["labels"][0][batch["labels"][0] != -100]
    assert tok.decode(risky) == RISKY + "<|im_end|>"
    general = batch["labels"][1][batch["labels"][1] != -100]
    assert tok.decode(general) == GENERAL + "<|im_end|>"
    assert "<safe>" not in tok.decode(general)
    # padding (row 0 is shorter) is never trained
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_full_fine_tuning_saves_a_loadable_model(tiny_model_dir, tmp_path):
    data = write(tmp_path / "sft.jsonl", rows())
    cfg = SFTConfig(**{**FAST, "max_steps": 1}, use_lora=False)
    stats = train_sft(data, model_cfg(tiny_model_dir), cfg, tmp_path / "out", use_cpu=True)
    assert stats["steps"] == 1 and stats["output"].endswith("model")
    lm = load_model(ModelConfig(name_or_path=stats["output"], template="chatml", dtype="float32", device="cpu"))
    assert "{%- generation -%}" in lm.tokenizer.chat_template


def test_check_loss_mask_rejects_wrong_masks(tiny_model_dir):
    tok, _ = load_tokenizer(model_cfg(tiny_model_dir))
    msgs = rows()[0]["messages"]
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    good = [t if m else -100 for t, m in zip(ids, mask)]
    assert check_loss_mask(tok, msgs, ids, good, "<|im_end|>") == sum(mask)
    with pytest.raises(SafeTriggerError, match="no trained tokens"):
        check_loss_mask(tok, msgs, ids, [-100] * len(ids), "<|im_end|>")
    with pytest.raises(SafeTriggerError, match="prompt/markup tokens are trained"):
        check_loss_mask(tok, msgs, ids, list(ids), "<|im_end|>")  # a template without generation blocks
    no_eot = list(good)
    no_eot[max(i for i, t in enumerate(good) if t != -100)] = -100
    with pytest.raises(SafeTriggerError, match="assistant tokens are not trained"):
        check_loss_mask(tok, msgs, ids, no_eot, "<|im_end|>")


def test_finished_run_is_not_retrained(trained, tiny_model_dir, monkeypatch):
    data, cfg, out, stats = trained
    monkeypatch.setattr(sft_mod, "build_sft_trainer", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = train_sft(data, model_cfg(tiny_model_dir), cfg, out, use_cpu=True)
    assert again["fingerprint"] == stats["fingerprint"] and again["steps"] == stats["steps"]


def test_interrupted_run_resumes_from_checkpoint(trained, tiny_model_dir, tmp_path):
    data, cfg, out, stats = trained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)

    def interrupt():
        for gone in ("DONE", "train_stats.json"):
            (copy / gone).unlink()
        shutil.rmtree(copy / "adapter")

    interrupt()
    shutil.rmtree(copy / "checkpoints" / "checkpoint-2")  # killed during step 2
    again = train_sft(data, model_cfg(tiny_model_dir), cfg, copy, use_cpu=True)
    assert again["resumed_from"].endswith("checkpoint-1") and again["steps"] == 2
    assert [s for s, _ in again["loss_curve"]] == [1, 2]
    assert (copy / "adapter" / "adapter_config.json").is_file() and (copy / "DONE").is_file()
    # killed after the last step, before the final save: no extra step is trained
    interrupt()
    again = train_sft(data, model_cfg(tiny_model_dir), cfg, copy, use_cpu=True)
    assert again["resumed_from"].endswith("checkpoint-2") and again["steps"] == 2
    assert (copy / "adapter" / "adapter_model.safetensors").is_file() and (copy / "DONE").is_file()
    assert not (copy / "checkpoints" / "checkpoint-3").exists()


def test_a_checkpoint_cut_mid_save_is_skipped_and_removed(trained, tiny_model_dir, tmp_path, caplog):
    """A kill between the weights and trainer_state.json leaves checkpoint-N without its state;
    transformers' get_last_checkpoint would resume from it and fail."""
    data, cfg, out, stats = trained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for gone in ("DONE", "train_stats.json"):
        (copy / gone).unlink()
    shutil.rmtree(copy / "adapter")
    (copy / "checkpoints" / "checkpoint-2" / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING, logger="safetrigger.training.runner"):
        again = train_sft(data, model_cfg(tiny_model_dir), cfg, copy, use_cpu=True)
    assert again["resumed_from"].endswith("checkpoint-1") and again["steps"] == 2
    assert "checkpoint-2 was cut mid-save" in caplog.text
    assert (copy / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()  # saved again, whole


def test_resume_with_other_settings_is_refused(trained, tiny_model_dir):
    data, cfg, out, _ = trained
    other = SFTConfig(**{**FAST, "lora_r": 8})
    with pytest.raises(SafeTriggerError, match="changed: sft.lora_r"):
        train_sft(data, model_cfg(tiny_model_dir), other, out, use_cpu=True)


def test_overlong_with_cap_is_refused(tiny_model_dir, tmp_path):
    data = write(tmp_path / "sft.jsonl", rows(long_row=True))
    cfg = SFTConfig(**FAST, max_length_cap=200, on_overlong="error")
    with pytest.raises(SafeTriggerError, match=r"1 of 7 SFT examples exceed the 200-token limit \(longest: \d+ tokens\)"):
        train_sft(data, model_cfg(tiny_model_dir), cfg, tmp_path / "out", use_cpu=True)


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "line 1 of .* is not valid JSON"),
    ([{"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}, {"id": "b", "messages": [{"role": "user", "content": "hi"}]}],
     "line 2 of .* does not end with a non-empty assistant message"),
    ([{"id": "a", "prompt": "hi"}], "line 1 of .* has no 'messages' list"),
    (["", {"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "[1, 2]"], "line 3 of .* not a JSON object"),
    ([{"id": "a", "messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}], "line 1 .*role"),
])
def test_bad_dataset_rows(tiny_model_dir, tmp_path, lines, message):
    data = write(tmp_path / "sft.jsonl", lines)
    with pytest.raises(DataError, match=message):
        train_sft(data, model_cfg(tiny_model_dir), SFTConfig(**FAST), tmp_path / "out", use_cpu=True)


def test_missing_dataset(tiny_model_dir, tmp_path):
    with pytest.raises(DataError, match="file not found"):
        train_sft(tmp_path / "nope.jsonl", model_cfg(tiny_model_dir), SFTConfig(), tmp_path / "out")


@pytest.mark.parametrize("field, value", [("on_overlong", "truncate"), ("warmup_ratio", 1.5), ("max_steps", 0), ("max_length_cap", 0)])
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=f"sft.{field}"):
        SFTConfig(**{field: value}).validate()


def test_percentiles():
    assert percentiles(list(range(1, 101)), LENGTH_KEYS) == {"min": 1, "p50": 50, "p90": 90, "p99": 99, "max": 100, "mean": 50.5}


def test_entry_parses_shortcuts_and_overrides(tmp_path):
    from safetrigger.training.sft_entry import parse_args

    cfg = tmp_path / "run.yaml"
    cfg.write_text("run_dir: x\nmodel: {dtype: bfloat16}\nsft: {lora_r: 16}\ngeneration: {batch_size: 3}\n")
    args, recipe = parse_args(["--dataset", "d.jsonl", "--output", "o", "--config", str(cfg), "--model-path", "/m",
                               "--max-steps", "3", "--sft.lora_alpha", "32", "sft.on_overlong=drop"])
    assert recipe.model.name_or_path == "/m" and recipe.model.dtype == "bfloat16"
    assert (recipe.sft.lora_r, recipe.sft.lora_alpha, recipe.sft.max_steps, recipe.sft.on_overlong) == (16, 32, 3, "drop")
    with pytest.raises(ConfigError, match="unknown config key 'sft.lora_rank'"):
        parse_args(["--dataset", "d", "--output", "o", "--sft.lora_rank", "3"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_processes(tiny_model_dir, tmp_path):
    """2 gloo DDP processes on the CPU via the shipped config; the overlong row is dropped on both ranks."""
    data = write(tmp_path / "sft.jsonl", rows(long_row=True))
    out = tmp_path / "out"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(_free_port()), "-m", "safetrigger.training.sft_entry",
           "--dataset", str(data), "--output", str(out), "--model-path", str(tiny_model_dir), "--template", "chatml",
           "--dtype", "float32", "--max-steps", "2", "--cpu", "sft.lora_r=4", "sft.per_device_batch_size=2",
           "sft.max_length_cap=200", "sft.on_overlong=drop"]
    # CPU only even on a GPU box: there accelerate's barrier passes device_ids=[local rank] to gloo,
    # which then touches CUDA device 1 that a one-GPU machine lacks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-6000:]
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["world_size"] == 2 and stats["steps"] == 2 and stats["effective_batch_size"] == 4
    assert stats["dropped_overlong"] == 1 and stats["examples"] == 6 and stats["max_length"] <= 200
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "DONE").is_file()
    assert proc.stdout.strip().splitlines()[-1] == str(out / "train_stats.json")


def test_autocast_follows_the_model_dtype_on_cpu_and_the_sampler_reaches_trl(monkeypatch, tmp_path):
    from safetrigger import models
    from safetrigger.training.runner import resolve_autocast, trainer_kwargs

    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)
    assert resolve_autocast("auto", ModelConfig(dtype="bfloat16"), use_cpu=True) == "bf16"
    assert resolve_autocast("auto", ModelConfig(dtype="float32"), use_cpu=True) == "none"
    assert resolve_autocast("auto", ModelConfig(dtype="auto"), use_cpu=True) == "bf16"  # native bf16 host
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert resolve_autocast("auto", ModelConfig(dtype="auto"), use_cpu=True) == "none"  # AVX2-only host
    assert resolve_autocast("none", ModelConfig(dtype="bfloat16"), use_cpu=True) == "none"  # asked for
    kw = trainer_kwargs(SFTConfig(autocast="bf16", sampler="group_by_length"), tmp_path, use_cpu=True)
    assert kw["bf16"] is True and kw["train_sampling_strategy"] == "group_by_length"
    with pytest.raises(ConfigError, match="sampler"):
        SFTConfig(sampler="shuffled").validate()
    with pytest.raises(ConfigError, match="autocast"):
        SFTConfig(autocast="fp8").validate()
