"""Progress bars (tqdm: rate and ETA) that one switch silences.

``safetrigger -q`` or ``SAFETRIGGER_QUIET=1`` (for CI logs) turns off every bar made here; the
CLI also sets ``TQDM_DISABLE`` for bars made by libraries (the transformers Trainer, datasets).
"""

from __future__ import annotations

import os


def quiet() -> bool:
    """Whether progress bars are off (``SAFETRIGGER_QUIET`` set to anything but 0/false/no)."""
    return os.environ.get("SAFETRIGGER_QUIET", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(iterable=None, *, desc: str, total: int | None = None, unit: str = "it", disable: bool = False):
    """A tqdm bar named ``desc``, off when ``disable`` or in quiet mode."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable or quiet(), dynamic_ncols=True)
