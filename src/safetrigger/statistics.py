"""Statistics, in one place: rates with Wilson intervals, exact McNemar tests on paired
outcomes, percentile-bootstrap intervals of category means, and nearest-rank percentiles.

Used by ``safetrigger eval`` (every rate in ``results.json`` carries its n and interval; models
are compared on the same prompts), by the report, and by the stages' length statistics.
scipy is imported lazily: the CLI does not pay for it unless a figure is computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

LEVEL = 0.95
"""Confidence level of every interval."""
ALPHA = 0.01
"""A paired difference is marked significant when its exact McNemar p-value is below this."""
SIG_MARK = "✱"
"""The marker written next to a significant p-value (results.md, the report)."""
N_BOOT, BOOT_SEED = 2000, 0
"""Bootstrap resamples and seed of the category-mean intervals (deterministic by design)."""
DIGITS = 6


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), DIGITS)


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson score interval of ``k`` successes in ``n`` trials (no continuity correction);
    None when ``n`` is 0 (no data, no interval)."""
    if n == 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))  # clip float noise at 0 / 1


def rate(k: int, n: int, level: float = LEVEL) -> dict:
    """``{"value", "k", "n", "ci": [lo, hi]}`` for ``k`` of ``n``; value and ci are None when n is 0."""
    ci = wilson(k, n, level)
    return {"value": _r(k / n) if n else None, "k": int(k), "n": int(n), "ci": None if ci is None else [_r(ci[0]), _r(ci[1])]}


# ---------------------------------------------------------------------------- paired tests


class IdMismatch(ValueError):
    """Two outcome sets to pair do not cover the same prompt ids."""

    def __init__(self, only_a: set, only_b: set):
        self.only_a, self.only_b = only_a, only_b
        super().__init__(f"prompt ids differ: {len(only_a)} only in the first, {len(only_b)} only in the second")


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool], alpha: float = ALPHA) -> dict:
    """Exact two-sided McNemar test of paired outcomes (``a[i]`` and ``b[i]`` on the same prompt).

    ``b01`` = pairs where ``a`` is false and ``b`` true, ``b10`` the reverse; the p-value is the
    two-sided binomial test of min(b01, b10) in b01 + b10 trials at 1/2 (1.0 without discordant
    pairs: nothing to tell the two apart). ``significant`` = p < ``alpha``."""
    if len(a) != len(b):
        raise ValueError(f"mcnemar_exact: {len(a)} outcomes against {len(b)}; pairs need equal lengths")
    b01 = sum(1 for x, y in zip(a, b) if not x and y)
    b10 = sum(1 for x, y in zip(a, b) if x and not y)
    p = 1.0
    if b01 + b10:
        from scipy.stats import binomtest

        p = float(binomtest(min(b01, b10), b01 + b10, 0.5).pvalue)
    return {"b01": b01, "b10": b10, "n_pairs": len(a), "p": p, "significant": p < alpha}


def mcnemar_by_id(a: Mapping[str, bool], b: Mapping[str, bool], alpha: float = ALPHA) -> dict:
    """:func:`mcnemar_exact` on outcomes keyed by stable prompt id; raises :class:`IdMismatch`
    when the two do not hold the same ids (pairing by position would compare different prompts)."""
    if set(a) != set(b):
        raise IdMismatch(set(a) - set(b), set(b) - set(a))
    ids = sorted(a)
    return mcnemar_exact([bool(a[i]) for i in ids], [bool(b[i]) for i in ids], alpha)


def format_p(p: float | None, alpha: float = ALPHA) -> str:
    """A p-value to 3 significant digits, marked when below ``alpha``."""
    if p is None:
        return "–"
    return f"{p:.3g}" + (f" {SIG_MARK}" if p < alpha else "")


# ---------------------------------------------------------------------------- bootstrap


def bootstrap_mean_ci(values_per_prompt: Sequence[Sequence[float]], n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                      level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of a category mean.

    ``values_per_prompt`` holds one list per benchmark, one value per prompt (0/1, or a
    prompt's mean over its samples). The category mean is the plain mean of the benchmarks'
    means (each benchmark weighs the same, as in the tables); each resample draws prompts with
    replacement within every benchmark, so a benchmark keeps its size and its weight. Empty
    benchmarks are left out; None when nothing is left. Same seed, same interval."""
    import numpy as np

    groups = [np.asarray(v, dtype=float) for v in values_per_prompt if len(v)]
    if not groups:
        return None
    rng = np.random.default_rng(seed)
    means = np.zeros(n_boot)
    for v in groups:
        means += v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    means /= len(groups)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def category_mean(values_per_prompt: Sequence[Sequence[float]], n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                  level: float = LEVEL) -> dict | None:
    """``{"value", "n", "benchmarks", "ci": [lo, hi]}``: the mean of benchmark means with its
    bootstrap interval (n = prompts over all benchmarks); None without any prompt."""
    groups = [list(v) for v in values_per_prompt if len(v)]
    ci = bootstrap_mean_ci(groups, n_boot, seed, level)
    if ci is None:
        return None
    value = sum(sum(v) / len(v) for v in groups) / len(groups)
    return {"value": _r(value), "n": sum(len(v) for v in groups), "benchmarks": len(groups), "ci": [_r(ci[0]), _r(ci[1])]}


# ---------------------------------------------------------------------------- percentiles


STAGE_KEYS = ("p50", "p90", "p99", "p100")
"""The generation stages' token-length keys."""
LENGTH_KEYS = ("min", "p50", "p90", "p99", "max", "mean")
"""The training runs' example-length keys."""


def percentiles(values: Sequence[float], keys: Sequence[str] = STAGE_KEYS) -> dict:
    """Nearest-rank percentiles (``pNN``: the smallest value with at least NN % of the values at
    or below it), plus ``min`` / ``max`` / ``mean`` (mean to one decimal) where ``keys`` asks;
    ``{}`` for no values."""
    if not values:
        return {}
    s = sorted(values)
    out = {}
    for key in keys:
        if key == "min":
            out[key] = s[0]
        elif key == "max":
            out[key] = s[-1]
        elif key == "mean":
            out[key] = round(sum(s) / len(s), 1)
        elif key.startswith("p") and key[1:].replace(".", "", 1).isdigit():
            # q * n / 100 rather than q / 100 * n: 0.07 * 100 is 7.000000000000001 in floats
            out[key] = s[min(len(s) - 1, max(0, math.ceil(float(key[1:]) * len(s) / 100) - 1))]
        else:
            raise ValueError(f"percentiles: unknown key {key!r} (min, max, mean or pNN)")
    return out
