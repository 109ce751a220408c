"""Training stages of Safe Trigger: stage-1 SFT (``train_sft``); DPO comes later.

Importing this package is cheap and pulls in neither torch/trl nor ``safetrigger.config``:
``train_sft`` is loaded on first use, so ``safetrigger.config`` can import ``SFTConfig`` from
``safetrigger.training.config`` without an import cycle.
"""

from safetrigger.training.config import SFTConfig

__all__ = ["SFTConfig", "train_sft"]


def __getattr__(name: str):
    if name == "train_sft":
        from safetrigger.training.sft import train_sft

        return train_sft
    raise AttributeError(f"module 'safetrigger.training' has no attribute {name!r}")
