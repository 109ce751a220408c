"""Stage-1 SFT for ``python -m`` / ``accelerate launch -m``; usage and options: ``safetrigger.training.entry``."""

from __future__ import annotations

import sys

from safetrigger.training.config import SFTConfig
from safetrigger.training.entry import main as _main
from safetrigger.training.entry import parse_args as _parse_args


def parse_args(argv: list[str]):
    """(argparse namespace, config with ``model`` and ``sft`` sections) from the command line."""
    return _parse_args(argv, "sft", SFTConfig, "python -m safetrigger.training.sft_entry")


def main(argv: list[str] | None = None) -> int:
    from safetrigger.training.sft import train_sft

    return _main("sft", SFTConfig, train_sft, argv)


if __name__ == "__main__":
    sys.exit(main())
