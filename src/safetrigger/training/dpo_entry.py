"""Stage-2 DPO for ``python -m`` / ``accelerate launch -m``; usage and options: ``safetrigger.training.entry``."""

from __future__ import annotations

import sys

from safetrigger.training.config import DPOConfig
from safetrigger.training.entry import main as _main
from safetrigger.training.entry import parse_args as _parse_args


def parse_args(argv: list[str]):
    """(argparse namespace, config with ``model`` and ``dpo`` sections) from the command line."""
    return _parse_args(argv, "dpo", DPOConfig, "python -m safetrigger.training.dpo_entry")


def main(argv: list[str] | None = None) -> int:
    from safetrigger.training.dpo import train_dpo

    return _main("dpo", DPOConfig, train_dpo, argv)


if __name__ == "__main__":
    sys.exit(main())
