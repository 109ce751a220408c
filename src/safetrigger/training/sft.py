"""Stage-1 Safe Trigger SFT: TRL ``SFTTrainer`` + LoRA on the assembled think (+ safe) + answer rows.

What it does, in order (every process runs the same code; only file writes are main-process):
  1. reads the SFT JSONL (``training.data.read_sft_rows``) and fingerprints data + settings;
  2. returns the saved stats if this output dir already finished with the same settings;
  3. tokenizes every row with the project chat template, derives ``max_length`` = longest row
     (TRL would otherwise truncate silently at 1024), refuses or drops rows over a cap;
  4. builds ``trl.SFTTrainer(assistant_only_loss=True)`` and checks TRL's labels against the
     rendered text (``training.data.check_loss_mask``): exactly think + safe + answer + end-of-turn;
  5. trains (resuming from ``<output>/checkpoints`` when one exists), saves the adapter (or the
     full model) + tokenizer to ``<output>/adapter`` (``<output>/model``), optionally merged
     weights to ``<output>/merged``, then ``train_stats.json`` and the ``DONE`` marker.

Output layout::

    <output>/train_settings.json   fingerprint of data + settings (a resume with others is refused)
    <output>/checkpoints/          trainer checkpoints (save_steps > 0)
    <output>/adapter/ | model/     final LoRA adapter (or full weights) + tokenizer
    <output>/merged/               LoRA merged into the base weights (save_merged)
    <output>/train_stats.json      examples, lengths, trained tokens, loss, runtime, steps, world size
    <output>/DONE                  written last: training finished
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

from safetrigger.chat_templates import FAMILIES
from safetrigger.config import ModelConfig
from safetrigger.errors import ConfigError, SafeTriggerError
from safetrigger.runstore import fingerprint, versions
from safetrigger.training.config import SFTConfig
from safetrigger.training.data import (
    apply_length_limit,
    check_loss_mask,
    file_sha256,
    percentiles,
    read_sft_rows,
    token_lengths,
)

log = logging.getLogger(__name__)

DONE = "DONE"
STATS = "train_stats.json"
SETTINGS = "train_settings.json"
CHECKPOINTS = "checkpoints"
MASK_CHECK_LIMIT = 1000
"""Rows whose loss mask is re-derived from the rendered text (evenly spaced); all rows get the
cheap checks (trained tokens > 0, no truncation)."""

# Settings that do not change what is learned; changing them on a resume is allowed.
_NOT_FINGERPRINTED = ("resume", "logging_steps", "save_steps", "save_total_limit", "save_merged", "output_subdir")


def train_sft(dataset_path: Path, model_cfg: ModelConfig, sft_cfg: SFTConfig, output_dir: Path, use_cpu: bool | None = None) -> dict:
    """Fine-tune ``model_cfg``'s model on the SFT JSONL at ``dataset_path``; returns the train stats.

    ``use_cpu``: None = CPU only when no CUDA device is visible. Runs unchanged under
    ``accelerate launch`` (DDP / FSDP / DeepSpeed): every process calls this function.
    """
    sft_cfg.validate()
    if model_cfg.adapter and not model_cfg.merge_adapter:
        raise ConfigError("SFT on top of an adapter needs model.merge_adapter=true (a fresh adapter is trained on the merged weights)")
    dataset_path, output_dir = Path(dataset_path), Path(output_dir)
    examples = read_sft_rows(dataset_path)
    settings = {  # what determines the result (the dataset by content, so moving the file is fine)
        "dataset_sha256": file_sha256(dataset_path),
        "model": {k: v for k, v in asdict(model_cfg).items() if k not in ("device", "cache_dir")},
        "sft": {k: v for k, v in asdict(sft_cfg).items() if k not in _NOT_FINGERPRINTED},
    }
    fp = fingerprint(settings)
    _refuse_other_settings(output_dir, fp, settings, sft_cfg.resume)
    if sft_cfg.resume and _is_done(output_dir, sft_cfg.use_lora):
        log.info("SFT already finished in %s; returning its stats (set sft.resume=false to retrain)", output_dir)
        stats = json.loads((output_dir / STATS).read_text())
        if sft_cfg.save_merged and stats.get("merged") is None and sft_cfg.use_lora:
            stats = _merge_after_the_fact(model_cfg, output_dir, stats, use_cpu)
        return stats

    # Lengths first: they set TRL's max_length, which must be known before its config exists.
    from safetrigger.models import load_tokenizer

    tokenizer, family = load_tokenizer(model_cfg)
    lengths_all = token_lengths(tokenizer, examples)
    limits = [v for v in (sft_cfg.max_length, sft_cfg.max_length_cap) if v is not None]
    kept, lengths, dropped = apply_length_limit(examples, lengths_all, min(limits) if limits else None, sft_cfg.on_overlong)
    max_length = sft_cfg.max_length or max(lengths)

    args = sft_training_args(sft_cfg, output_dir / CHECKPOINTS, max_length, use_cpu)
    with args.main_process_first(local=False, desc="prepare SFT output dir"):
        if args.process_index == 0:
            _prepare_output_dir(output_dir, sft_cfg.resume, fp, settings)
    resume_from = _last_checkpoint(output_dir / CHECKPOINTS) if sft_cfg.resume else None

    trainer, loaded = build_sft_trainer(model_cfg, sft_cfg, args, kept)
    trained_tokens = verify_training_data(trainer, kept, lengths, FAMILIES[family].end_of_turn)

    log.info("SFT: %d examples (%d dropped as overlong), max_length %d, %d trained tokens%s", len(kept), dropped,
             max_length, trained_tokens, f", resuming from {resume_from}" if resume_from else "")
    started = time.time()
    final_dir = output_dir / ("adapter" if sft_cfg.use_lora else "model")
    finished = _finished_state(resume_from)
    if finished is None:
        train_loss = trainer.train(resume_from_checkpoint=resume_from).training_loss
        trainer.save_model(str(final_dir))  # every process: FSDP / ZeRO-3 gather the weights collectively
        history, steps, epochs = trainer.state.log_history, trainer.state.global_step, trainer.state.epoch
    else:
        # transformers 5.24 trains one step past max_steps when resumed from a checkpoint that
        # already reached it; the checkpoint holds the final weights, so they are copied instead.
        history, steps, epochs = finished["log_history"], finished["global_step"], finished["epoch"]
        losses = [h["loss"] for h in history if "loss" in h]
        train_loss = sum(losses) / len(losses) if losses else float("nan")
        if trainer.is_world_process_zero():
            _copy_checkpoint_weights(Path(resume_from), final_dir)
    trainer.accelerator.wait_for_everyone()

    stats = {
        "dataset": str(dataset_path),
        "examples": len(kept),
        "examples_in_file": len(examples),
        "dropped_overlong": dropped,
        "max_length": max_length,
        "length": percentiles(lengths),
        "longest_in_file": max(lengths_all),
        "trained_tokens": trained_tokens,  # per epoch: assistant tokens (think + safe + answer + end) with loss
        "train_loss": train_loss,
        "runtime_s": round(time.time() - started, 2),
        "steps": steps,
        "epochs": epochs,
        "world_size": args.world_size,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "resumed_from": resume_from,
        "loss_curve": [[h["step"], h["loss"]] for h in history if "loss" in h],
        "use_lora": sft_cfg.use_lora,
        "output": str(final_dir),
        "merged": None,
        "model": loaded.identity,
        "fingerprint": fp,
        "settings": settings,
        "versions": versions(),
    }
    if not math.isfinite(stats["train_loss"]):
        raise SafeTriggerError(f"SFT loss is {stats['train_loss']}: training diverged (lower sft.learning_rate); not marked done")
    if sft_cfg.save_merged and sft_cfg.use_lora:
        stats["merged"] = str(output_dir / "merged")
    # Main process only, and without a barrier after it: a long CPU merge must not hit the
    # collective timeout of processes that have nothing left to do.
    if trainer.is_world_process_zero():
        _check_saved(final_dir, sft_cfg.use_lora)
        if sft_cfg.save_merged and sft_cfg.use_lora:
            save_merged(model_cfg, final_dir, output_dir / "merged", loaded.identity["dtype"])
        _finish(output_dir, stats)
    return stats


# ------------------------------------------------------------------------------ pieces


def sft_training_args(cfg: SFTConfig, checkpoints: Path, max_length: int, use_cpu: bool | None):
    """TRL's SFTConfig from ours (checkpoints under ``checkpoints``). bf16 only on CUDA with bf16 support; no reporting integrations."""
    import torch
    import trl

    if use_cpu is None:
        use_cpu = not torch.cuda.is_available()
    bf16 = bool(not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return trl.SFTConfig(
        output_dir=str(checkpoints),
        assistant_only_loss=True,
        max_length=max_length,
        packing=False,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio (warmup_ratio is gone)
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=use_cpu,
        bf16=bf16,
        report_to=[],
        ddp_find_unused_parameters=False if cfg.use_lora else None,
    )


def build_sft_trainer(model_cfg: ModelConfig, cfg: SFTConfig, args, examples):
    """Load the model on this process's device and wrap it in an SFTTrainer (LoRA via peft_config)."""
    from datasets import Dataset
    from trl import SFTTrainer

    from transformers import set_seed

    from safetrigger.models import load_model

    set_seed(cfg.seed)  # the LoRA init happens in SFTTrainer.__init__, before Trainer seeds anything
    if model_cfg.device == "auto":  # each process on its own device (cuda:LOCAL_RANK), as the trainer expects
        model_cfg = replace(model_cfg, device=str(args.device))
    loaded = load_model(model_cfg, for_training=True)
    peft_config = None
    if cfg.use_lora:
        from peft import LoraConfig

        target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",") if t.strip()]
        peft_config = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=target,
            bias="none", task_type="CAUSAL_LM",
        )
    dataset = Dataset.from_list([{"messages": ex.messages} for ex in examples])
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=dataset, processing_class=loaded.tokenizer, peft_config=peft_config)
    return trainer, loaded


def verify_training_data(trainer, examples, lengths: list[int], end_of_turn: str) -> int:
    """Check TRL's tokenized rows and first collated batch; returns the number of trained tokens.

    All rows: same length as measured (nothing truncated) and at least one trained token.
    Up to MASK_CHECK_LIMIT rows: labels == exactly the assistant content + end-of-turn.
    First batch through the real collator: padding is never trained and no label is lost.
    """
    ds = trainer.train_dataset
    if len(ds) != len(examples):
        raise SafeTriggerError(f"TRL kept {len(ds)} of {len(examples)} SFT rows; rows were dropped during preparation")
    tok = trainer.processing_class
    total = 0
    counts = []
    for i, row in enumerate(ds):
        if len(row["input_ids"]) != lengths[i]:
            raise SafeTriggerError(f"row {examples[i].id!r}: TRL tokenized {len(row['input_ids'])} tokens, measured {lengths[i]} (truncated or re-rendered)")
        n = sum(1 for t in row["labels"] if t != -100)
        if n == 0:
            raise SafeTriggerError(f"row {examples[i].id!r} has no trained tokens; the chat template lacks a {{% generation %}} block")
        counts.append(n)
        total += n
    step = max(1, len(ds) // MASK_CHECK_LIMIT)
    for i in range(0, len(ds), step):
        row = ds[i]
        check_loss_mask(tok, examples[i].messages, row["input_ids"], row["labels"], end_of_turn)
    first = [ds[i] for i in range(min(len(ds), trainer.args.per_device_train_batch_size))]
    batch = trainer.data_collator(first)
    labelled = int((batch["labels"] != -100).sum())
    if labelled != sum(counts[: len(first)]):
        raise SafeTriggerError(f"collated batch trains {labelled} tokens, rows hold {sum(counts[: len(first)])}: the collator changes the loss mask")
    return total


def _refuse_other_settings(output_dir: Path, fp: str, settings: dict, resume: bool) -> None:
    """Resuming or reusing an output dir made with other data/settings would mix two runs."""
    path = output_dir / SETTINGS
    if not resume or not path.is_file():
        return
    if not (output_dir / DONE).is_file() and _last_checkpoint(output_dir / CHECKPOINTS) is None:
        return  # nothing to resume: the new settings simply start over
    old = json.loads(path.read_text())
    if old.get("fingerprint") == fp:
        return
    changed = sorted(k for k in set(old.get("settings", {})) | set(settings) if old.get("settings", {}).get(k) != settings.get(k))
    if "sft" in changed or "model" in changed:
        inner = []
        for section in ("model", "sft"):
            a, b = old.get("settings", {}).get(section, {}), settings.get(section, {})
            inner += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        changed = [c for c in changed if c not in ("model", "sft")] + inner
    raise SafeTriggerError(
        f"{output_dir} holds SFT made with other data or settings (changed: {', '.join(changed)}); "
        "use another output dir, or set sft.resume=false to start over there"
    )


def _is_done(output_dir: Path, use_lora: bool) -> bool:
    """Finished = DONE marker, stats and the final weights all present."""
    final = output_dir / ("adapter" if use_lora else "model")
    return (output_dir / DONE).is_file() and (output_dir / STATS).is_file() and final.is_dir()


def _prepare_output_dir(output_dir: Path, resume: bool, fp: str, settings: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (output_dir / DONE).unlink(missing_ok=True)
        if (output_dir / CHECKPOINTS).exists():
            log.warning("sft.resume=false: removing old checkpoints in %s", output_dir / CHECKPOINTS)
            shutil.rmtree(output_dir / CHECKPOINTS)
    _write_json(output_dir / SETTINGS, {"fingerprint": fp, "settings": settings})


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _finished_state(checkpoint: str | None) -> dict | None:
    """The trainer state of ``checkpoint`` if it already reached the planned number of steps."""
    if checkpoint is None:
        return None
    path = Path(checkpoint) / "trainer_state.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    return state if state.get("max_steps") and state.get("global_step", 0) >= state["max_steps"] else None


_TRAINER_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")


def _copy_checkpoint_weights(checkpoint: Path, final_dir: Path) -> None:
    """Copy a checkpoint's saved model (adapter or weights + tokenizer), not the optimizer state."""
    final_dir.mkdir(parents=True, exist_ok=True)
    for f in checkpoint.iterdir():
        if f.is_file() and f.name not in _TRAINER_ONLY and not f.name.startswith("rng_state"):
            shutil.copy2(f, final_dir / f.name)


def _check_saved(final_dir: Path, use_lora: bool) -> None:
    marker = "adapter_config.json" if use_lora else "config.json"
    if not (final_dir / marker).is_file() or not any(final_dir.glob("*.safetensors")):
        raise SafeTriggerError(
            f"no weights were written to {final_dir}; with FSDP set fsdp_state_dict_type: FULL_STATE_DICT "
            "(configs/accelerate/fsdp.yaml), with ZeRO-3 stage3_gather_16bit_weights_on_model_save: true"
        )


def save_merged(model_cfg: ModelConfig, adapter_dir: Path, merged_dir: Path, dtype: str) -> Path:
    """Base weights + adapter, merged (``merge_and_unload``) and saved with the tokenizer; checked.

    Done on the CPU from the saved adapter, so it works whatever sharding trained it. The check:
    no LoRA tensors or peft prefixes remain and the tensor names match the base checkpoint's, so
    the directory loads as a plain model (tied embeddings included).
    """
    from safetrigger.models import load_adapter, load_model

    loaded = load_model(replace(model_cfg, device="cpu", dtype=dtype), for_training=False)  # base (+ merged earlier adapter)
    loaded.model = load_adapter(loaded.model, adapter_dir, merge=True)
    tmp = merged_dir.with_name(merged_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    loaded.model.save_pretrained(tmp)
    loaded.tokenizer.padding_side = "left"
    loaded.tokenizer.save_pretrained(tmp)
    check_merged(tmp, Path(loaded.identity["resolved"]))
    shutil.rmtree(merged_dir, ignore_errors=True)
    tmp.rename(merged_dir)
    return merged_dir


def check_merged(merged_dir: Path, base_dir: Path) -> None:
    """Raise if the merged checkpoint still holds adapter tensors or differs from the base's layout."""
    keys = _safetensors_keys(merged_dir)
    if not keys:
        raise SafeTriggerError(f"merged model in {merged_dir} has no safetensors weights")
    bad = [k for k in keys if "lora_" in k or k.startswith("base_model.")]
    if bad:
        raise SafeTriggerError(f"merged model still holds adapter tensors ({bad[0]}, ...): merge failed")
    base = _safetensors_keys(base_dir) if base_dir.is_dir() else set()
    if base and base != keys:
        diff = sorted(base ^ keys)
        raise SafeTriggerError(f"merged model's tensors differ from the base checkpoint's ({len(diff)} names, e.g. {diff[0]})")


def _safetensors_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for f in Path(folder).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            keys |= set(st.keys())
    return keys


def _merge_after_the_fact(model_cfg: ModelConfig, output_dir: Path, stats: dict, use_cpu: bool | None) -> dict:
    """A finished run asked again with save_merged: merge the saved adapter (main process only)."""
    from accelerate import PartialState

    state = PartialState(cpu=bool(use_cpu))
    if state.is_main_process:
        stats["merged"] = str(save_merged(model_cfg, output_dir / "adapter", output_dir / "merged", stats["model"]["dtype"]))
        _write_json(output_dir / STATS, stats)
    state.wait_for_everyone()
    stats["merged"] = str(output_dir / "merged")
    return stats


def _finish(output_dir: Path, stats: dict) -> None:
    _write_json(output_dir / STATS, stats)
    (output_dir / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)
