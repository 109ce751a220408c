"""Settings of the two training stages: Safe Trigger SFT (stage 1) and DPO (stage 2).

Paper values: LoRA rank 64, alpha 16, dropout 0.05 (TRL). The rest are the project's defaults
(METHOD.md [choice]): SFT lr 1e-4, 2 epochs; DPO beta 0.1, lr 5e-6, 1 epoch, reference log-probs
precomputed; both cosine, 3% warmup, all linear projections, max length from the data. Fields
follow ``safetrigger.config``: one help line each, so ``--explain`` and YAML/CLI overrides work.
``TrainConfig`` holds what both stages share, so the two sections read the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safetrigger.errors import ConfigError


def opt(default: Any, help: str = "") -> Any:
    """Same as ``safetrigger.config.opt``; not imported from there because ``RunConfig`` embeds
    ``SFTConfig``, so safetrigger.config imports this module (importing back would be circular)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """What SFT and DPO share: adapter, schedule, batch, lengths, checkpoints."""

    use_lora: bool = opt(True, "Train a LoRA adapter (paper); false = full fine-tuning.")
    lora_r: int = opt(64, "LoRA rank (paper: 64).")
    lora_alpha: int = opt(16, "LoRA alpha (paper: 16).")
    lora_dropout: float = opt(0.05, "LoRA dropout (paper: 0.05).")
    lora_target: str = opt("all-linear", "LoRA target modules: 'all-linear' or a comma-separated list of module names.")
    learning_rate: float = opt(1e-4, "Peak learning rate.")
    num_epochs: float = opt(2, "Training epochs (ignored when max_steps > 0).")
    max_steps: int = opt(-1, "Stop after this many optimizer steps (-1 = run num_epochs); for smoke tests.")
    lr_scheduler: str = opt("cosine", "Learning-rate schedule (transformers SchedulerType: cosine, linear, constant, ...).")
    warmup_ratio: float = opt(0.03, "Share of total steps spent in linear warmup, in [0, 1).")
    per_device_batch_size: int = opt(4, "Examples per device per forward pass.")
    gradient_accumulation_steps: int = opt(1, "Forward passes per optimizer step (effective batch = this x batch x devices).")
    max_length: int | None = opt(None, "Max tokens per example. None = derived from the data: longest example, never silently truncated. Set explicitly, every example must fit it (as with max_length_cap).")
    max_length_cap: int | None = opt(None, "Optional hard cap on example length; longer examples are dropped and counted, or refused (see on_overlong).")
    on_overlong: str = opt("error", "What to do with examples longer than max_length / max_length_cap: error | drop (drop is counted and logged).")
    autocast: str = opt("auto", "Mixed precision over the fp32 master weights: auto (bf16 on CUDA with bf16, and on a CPU when model.dtype resolves to bfloat16) | bf16 | none.")
    sampler: str = opt("random", "Batch order: random | group_by_length (rows of similar length share a batch: less padding, more tokens/s).")
    gradient_checkpointing: bool = opt(False, "Recompute activations in backward to save memory (long reasoning traces).")
    save_merged: bool = opt(False, "Also write LoRA-merged full weights to <output>/merged (loadable without peft).")
    seed: int = opt(0, "Seed for data order and adapter init.")
    logging_steps: int = opt(1, "Log loss every this many optimizer steps.")
    save_steps: int = opt(0, "Write a resumable checkpoint every this many steps (0 = only the final adapter, at the end).")
    save_total_limit: int = opt(2, "Keep at most this many checkpoints (oldest removed first).")
    output_subdir: str = opt("sft", "Subdirectory of the run directory that holds this stage's outputs.")
    resume: bool = opt(True, "Continue from the last checkpoint, or skip when training already finished; false = start over.")

    section = "train"  # config section name used in messages (class attribute, not a field)

    def validate(self) -> None:
        """Refuse values TRL would accept but that mean a mistake (one-line ConfigError)."""
        if self.on_overlong not in ("error", "drop"):
            raise ConfigError(f"{self.section}.on_overlong must be 'error' or 'drop', got {self.on_overlong!r}")
        if self.autocast not in ("auto", "bf16", "none"):
            raise ConfigError(f"{self.section}.autocast must be auto, bf16 or none, got {self.autocast!r}")
        if self.sampler not in ("random", "group_by_length"):
            raise ConfigError(f"{self.section}.sampler must be random or group_by_length, got {self.sampler!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"{self.section}.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("lora_r", "per_device_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{self.section}.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_length", "max_length_cap"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{self.section}.{name} must be a positive number of tokens or null, got {value}")
        if self.save_steps < 0:
            raise ConfigError(f"{self.section}.save_steps must be >= 0, got {self.save_steps}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"{self.section}.max_steps must be -1 (use num_epochs) or positive, got {self.max_steps}")
        if self.max_steps == -1 and self.num_epochs <= 0:
            raise ConfigError(f"{self.section}.num_epochs must be positive, got {self.num_epochs}")


@dataclass
class SFTConfig(TrainConfig):
    """How the model is fine-tuned on the assembled think (+ safe) + answer responses (stage 1)."""

    decision_weight: float = opt(1.0, "Loss weight of each row's decision token, the first after </think> (<safe> block or answer); 1 = plain SFT.")

    section = "sft"

    def validate(self) -> None:
        super().validate()
        if self.decision_weight <= 0:
            raise ConfigError(f"sft.decision_weight must be positive, got {self.decision_weight}")


LATER_FIELDS = {"decision_weight": 1.0}
"""Fields added after runs existed, with their defaults: left out of fingerprints at their
default, so a run made before they existed still resumes."""


def fingerprinted(cfg: TrainConfig, leave_out: tuple[str, ...] = ()) -> dict:
    """``cfg`` as recorded in fingerprints: without ``leave_out``, and without later fields at their default."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(cfg).items() if k not in leave_out and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


@dataclass
class DPOConfig(TrainConfig):
    """How ST-S is tuned on (chosen, rejected) pairs of its own responses (stage 2); reference = ST-S."""

    learning_rate: float = opt(5e-6, "Peak learning rate (METHOD.md default for DPO with LoRA: 5e-6).")
    num_epochs: float = opt(1, "Training epochs (ignored when max_steps > 0).")
    beta: float = opt(0.1, "DPO beta: strength of the KL anchor to the reference (ST-S).")
    loss_type: str = opt("sigmoid", "TRL DPO loss type (sigmoid = the standard DPO loss; ipo, hinge, ... also accepted by TRL).")
    precompute_ref_log_probs: bool = opt(True, "Compute the reference log-probs once before training (cached by TRL keyed on model + data hash) instead of a second forward per step.")
    output_subdir: str = opt("dpo", "Subdirectory of the run directory that holds this stage's outputs.")

    section = "dpo"

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise ConfigError(f"dpo.beta must be positive, got {self.beta}")
