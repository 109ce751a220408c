"""Deterministic train/dev/eval assignment: a key hashed into [0, 1), then cut into bands.

A split is a pure function of a key (normalised text, or a template family) hashed with SHA-256,
so it is the same on every run, machine and Python version (no `hash()` randomisation, no RNG
state). Hashing the *normalised text* rather than the id puts copies of one prompt on one side.

Bands: ``[0, eval)`` is eval, ``[eval, eval + dev)`` dev, the rest train. Dev came after train
and eval, so it sits next to the eval band: a source with training data keeps its eval fraction
(every eval key stays eval; dev comes out of train), an evaluation-only source gives the top of
its eval band to dev. No key ever moves from train to eval. The check that the three splits
share nothing lives in `disjoint`.
"""

from __future__ import annotations

import hashlib

from ..errors import DataError

SPLITS = ("train", "dev", "eval")
"""dev: held out like eval, for tuning settings (budgets, thresholds) so eval stays untouched."""
SPLIT_SALT = "safetrigger-split-v1"  # changing it reshuffles every split: bump only on purpose


def unit_hash(key: str, salt: str = SPLIT_SALT) -> float:
    """A stable number in [0, 1) for `key`."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, eval_fraction: float, dev_fraction: float = 0.0) -> str:
    """'eval' for about `eval_fraction` of keys, 'dev' for about `dev_fraction`, 'train' for the rest."""
    if not (0 <= eval_fraction and 0 <= dev_fraction and eval_fraction + dev_fraction <= 1):
        raise DataError(f"split fractions must be >= 0 and add up to at most 1, got eval {eval_fraction}, "
                        f"dev {dev_fraction}")
    u = unit_hash(key)
    return "eval" if u < eval_fraction else "dev" if u < eval_fraction + dev_fraction else "train"


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    """`split` itself, or a DataError naming the allowed ones."""
    if split not in allowed:
        raise DataError(f"split must be one of {', '.join(map(repr, allowed))}, got {split!r}")
    return split
