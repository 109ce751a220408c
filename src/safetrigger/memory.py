"""Giving freed memory back, between stages of one process.

A ``safetrigger run`` keeps one process across its stages. Python's and glibc's allocators keep
what a finished stage freed (a training step's tensors, an engine's buffers) as reserved heap,
so the next stage starts on top of the last one's peak: measured on the demo, the run's peak
RSS was set in eval, on top of what SFT had left. ``give_back`` collects garbage, empties the
CUDA cache and asks glibc to return free heap pages to the system (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)


def give_back() -> None:
    """Free what nothing references any more and return it to the system where possible."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as e:  # torch missing or its CUDA state broken: nothing to empty
        log.debug("cuda cache not emptied: %s", e)
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):  # glibc only (not musl, macOS)
            libc.malloc_trim(0)
    except OSError as e:
        log.debug("malloc_trim unavailable: %s", e)
