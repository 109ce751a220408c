"""Training stages of Safe Trigger: stage-1 SFT (``train_sft``); DPO comes later.

Heavy imports (torch, trl, peft) happen inside the functions, so importing this package is cheap.
"""

from safetrigger.training.config import SFTConfig
from safetrigger.training.sft import train_sft

__all__ = ["SFTConfig", "train_sft"]
