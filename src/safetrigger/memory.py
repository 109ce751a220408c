"""Giving freed memory back, between stages of one process.

A ``safetrigger run`` keeps one process across its stages. Python's and glibc's allocators keep
what a finished stage freed (a training step's tensors, an engine's buffers) as reserved heap,
so the next stage starts on top of the last one's peak: measured on the demo, the run's peak
RSS was set in eval, on top of what SFT had left. ``give_back`` collects garbage, empties the
CUDA cache and asks glibc to return free heap pages to the system (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` from the symbols already loaded in this process, or None (musl,
    macOS, Windows). Looked up once: ``ctypes.util.find_library`` would run ldconfig each call."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None


def give_back() -> None:
    """Free what nothing references any more and return it to the system where possible."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as e:  # torch missing or its CUDA state broken: nothing to empty
        log.debug("cuda cache not emptied: %s", e)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
