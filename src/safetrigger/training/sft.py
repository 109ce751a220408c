"""Stage-1 Safe Trigger SFT: TRL ``SFTTrainer`` + LoRA on the assembled think (+ safe) + answer rows.

The SFT :class:`~safetrigger.training.runner.Recipe` (the shared skeleton is ``runner.train``):
  1. reads the SFT JSONL (``training.data.read_sft_rows``);
  2. measures every row with the project chat template, so ``max_length`` = longest row
     (TRL would otherwise truncate silently at 1024);
  3. builds ``trl.SFTTrainer(assistant_only_loss=True)`` and checks TRL's labels against the
     rendered text (``training.data.check_loss_mask``): exactly think + safe + answer + end-of-turn.
Output layout: see ``safetrigger.training.runner``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from safetrigger.config import ModelConfig
from safetrigger.errors import SafeTriggerError
from safetrigger.training.config import SFTConfig
from safetrigger.training.data import check_loss_mask, read_sft_rows, token_lengths
from safetrigger.training.runner import STATS, Recipe, save_merged, train  # noqa: F401  (re-exported)

MASK_CHECK_LIMIT = 1000
"""Rows whose loss mask is re-derived from the rendered text (evenly spaced); all rows get the
cheap checks (trained tokens > 0, no truncation)."""


def train_sft(dataset_path: Path, model_cfg: ModelConfig, sft_cfg: SFTConfig, output_dir: Path, use_cpu: bool | None = None) -> dict:
    """Fine-tune ``model_cfg``'s model on the SFT JSONL at ``dataset_path``; returns the train stats."""
    return train(SFT_RECIPE, dataset_path, model_cfg, sft_cfg, output_dir, use_cpu)


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


SFT_RECIPE = Recipe("SFT", read_sft_rows, token_lengths, sft_training_args, build_sft_trainer, verify_training_data)
