"""safetrigger: the Safe Trigger method for large reasoning models.

The model learns to append an explicit ``<safe>…</safe>`` safety analysis after its own
reasoning, only on risky queries (SFT, then DPO, on self-generated responses).
Importing the package is cheap: torch/transformers load only where a module needs them.
"""

__version__ = "0.1.0"
