"""Stage-1 Safe Trigger SFT: TRL ``SFTTrainer`` + LoRA on the assembled think (+ safe) + answer rows.

The SFT :class:`~safetrigger.training.runner.Recipe` (the shared skeleton is ``runner.train``):
  1. reads the SFT JSONL (``training.data.read_sft_rows``);
  2. measures every row with the project chat template, so ``max_length`` = longest row
     (TRL would otherwise truncate silently at 1024);
  3. builds ``trl.SFTTrainer(assistant_only_loss=True)`` and checks TRL's labels against the
     rendered text (``training.data.check_loss_mask``): exactly think + safe + answer + end-of-turn;
  4. with ``sft.decision_weight`` != 1, weights the loss of each row's decision token, the first
     one after ``</think>`` (``training.decision``).
Output layout: see ``safetrigger.training.runner``.
"""

from __future__ import annotations

from pathlib import Path

from safetrigger.chat_templates import FAMILIES
from safetrigger.config import ModelConfig
from safetrigger.errors import SafeTriggerError
from safetrigger.training.config import SFTConfig
from safetrigger.training.data import check_loss_mask, read_sft_rows, token_lengths
from safetrigger.training.runner import STATS, Recipe, load_for_training, save_merged, train, trainer_kwargs  # noqa: F401  (STATS, save_merged re-exported)

MASK_CHECK_LIMIT = 1000
"""Rows whose loss mask is re-derived from the rendered text (evenly spaced); all rows get the
cheap checks (trained tokens > 0, no truncation)."""


def train_sft(dataset_path: Path, model_cfg: ModelConfig, sft_cfg: SFTConfig, output_dir: Path, use_cpu: bool | None = None) -> dict:
    """Fine-tune ``model_cfg``'s model on the SFT JSONL at ``dataset_path``; returns the train stats."""
    return train(SFT_RECIPE, dataset_path, model_cfg, sft_cfg, output_dir, use_cpu)


def sft_training_args(cfg: SFTConfig, checkpoints: Path, max_length: int, use_cpu: bool | None):
    """TRL's SFTConfig: assistant-only loss, no packing, max_length from the data."""
    import trl

    return trl.SFTConfig(assistant_only_loss=True, max_length=max_length, packing=False, **trainer_kwargs(cfg, checkpoints, use_cpu))


def build_sft_trainer(model_cfg: ModelConfig, cfg: SFTConfig, args, examples):
    """The model on this process's device in an SFTTrainer (LoRA via peft_config)."""
    from datasets import Dataset
    from trl import SFTTrainer

    from safetrigger.training.decision import decision_table, weighted_trainer_class

    loaded, peft_config = load_for_training(model_cfg, cfg, args)
    dataset = Dataset.from_list([{"messages": ex.messages} for ex in examples])
    weighted = cfg.decision_weight != 1
    trainer_class = weighted_trainer_class() if weighted else SFTTrainer
    trainer = trainer_class(model=loaded.model, args=args, train_dataset=dataset, processing_class=loaded.tokenizer, peft_config=peft_config)
    if weighted:
        trainer.decision_weight = cfg.decision_weight
        trainer.decision_positions = decision_table(trainer.processing_class, examples, trainer.train_dataset, FAMILIES[loaded.family].end_of_turn)
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
