"""Training stages of Safe Trigger: stage-1 SFT (``train_sft``) and stage-2 DPO (``train_dpo``).

Importing this package is cheap and pulls in neither torch/trl nor ``safetrigger.config``:
``train_sft``/``train_dpo`` are loaded on first use, so ``safetrigger.config`` can import ``SFTConfig`` from
``safetrigger.training.config`` without an import cycle.
"""

from safetrigger.training.config import DPOConfig, SFTConfig

__all__ = ["DPOConfig", "SFTConfig", "train_dpo", "train_sft"]


def __getattr__(name: str):
    if name == "train_sft":
        from safetrigger.training.sft import train_sft

        return train_sft
    if name == "train_dpo":
        from safetrigger.training.dpo import train_dpo

        return train_dpo
    raise AttributeError(f"module 'safetrigger.training' has no attribute {name!r}")
