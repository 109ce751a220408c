"""The hierarchical reward of Safe Trigger DPO and the choice of one (chosen, rejected) pair per query.

METHOD.md stage 2 [paper]:  R = F·S·(T + Sf + w_a) + F·(1−S)·w_b + (1−F)·S·w_c,  w_a > w_b > w_c > 0
  F  = F_safe   the final answer is safe (safety judge, answer only)
  S  = S_exist  a complete <safe>…</safe> block is present (parser)
  T  = T_full   the reasoning considers safety sufficiently (rubric judge)
  Sf = S_full   the <safe> analysis has all three parts (rubric judge)
Order this encodes: safe + tag ≻ safe without tag ≻ unsafe + tag ≻ unsafe without tag (0).
A query is kept when max R − min R ≥ δ; chosen = best, rejected = worst.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safetrigger.config import RewardConfig

FLAGS = ("F_safe", "S_exist", "T_full", "S_full")


def reward(flags: dict, cfg: RewardConfig) -> float:
    """R for one response's flags (each 0/1 or bool; missing flags are an error, not a 0)."""
    missing = [f for f in FLAGS if f not in flags]
    if missing:
        raise KeyError(f"reward needs flags {', '.join(missing)}")
    F, S, T, Sf = (int(bool(flags[f])) for f in FLAGS)
    return F * S * (T + Sf + cfg.w_a) + F * (1 - S) * cfg.w_b + (1 - F) * S * cfg.w_c


@dataclass
class Pair:
    chosen: int
    """Index (in the given list) of the chosen response."""
    rejected: int
    gap: float
    rewards: list[float] = field(default_factory=list)


def choose_pair(rewards: list[float], lengths: list[int], delta: float) -> Pair | None:
    """The (best, worst) responses of one query, or None when the reward gap is below ``delta``.

    Ties (documented policy): among equally rewarded best responses the *shortest* is chosen
    (no reward for padding), among equally rewarded worst ones the *longest* is rejected; equal
    lengths fall back to the lower sample index, so the choice is deterministic.
    """
    if len(rewards) != len(lengths):
        raise ValueError("one length per reward")
    if len(rewards) < 2:
        return None
    hi, lo = max(rewards), min(rewards)
    if hi - lo < delta:
        return None
    chosen = min((i for i, r in enumerate(rewards) if r == hi), key=lambda i: (lengths[i], i))
    rejected = min((i for i, r in enumerate(rewards) if r == lo), key=lambda i: (-lengths[i], i))
    return Pair(chosen, rejected, hi - lo, list(rewards))
