"""The hierarchical reward of Safe Trigger DPO and the choice of one (chosen, rejected) pair per query.

METHOD.md stage 2 [paper]:  R = F·S·(T + Sf + w_a) + F·(1−S)·w_b + (1−F)·S·w_c,  w_a > w_b > w_c > 0
  F  = F_safe   the final answer is safe (safety judge, answer only)
  S  = S_exist  a complete <safe>…</safe> block is present (parser)
  T  = T_full   the reasoning considers safety sufficiently (rubric judge)
  Sf = S_full   the <safe> analysis has all three parts (rubric judge)
Order this encodes: safe + tag ≻ safe without tag ≻ unsafe + tag ≻ unsafe without tag (0).
A query is kept when max R − min R ≥ δ; chosen = best, rejected = worst.

General queries in the DPO pool **[choice]** (the paper's pool is adversarial only): R above
would reward a block on them, the opposite of an adaptive trigger. So a query outside
RISKY_CATEGORIES gets the same ladder with the block's role reversed,
  R_general = A·(1−S)·w_a + A·S·w_b + (1−A)·(1−S)·w_c,   A = the answer is not a refusal,
helpful without a block ≻ helpful with one ≻ refusing without ≻ refusing with one (0).
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


def general_reward(answered: bool, has_block: bool, cfg: RewardConfig) -> float:
    """R_general for one response to a general query (module docstring)."""
    A, S = int(bool(answered)), int(bool(has_block))
    return A * (1 - S) * cfg.w_a + A * S * cfg.w_b + (1 - A) * (1 - S) * cfg.w_c


def answered(score_row: dict) -> bool:
    """The judge saw an answer and did not call it a refusal (a refusal judge's ``unsafe`` is
    "complied"). No answer or an undecided judge is not an answer."""
    return (score_row.get("verdict") or {}).get("unsafe") is True


def is_risky(category: str | None, row_id) -> bool:
    """Which ladder applies: the paper's (risky) or R_general. Never guessed for an unknown category."""
    from safetrigger.data import CATEGORIES, RISKY_CATEGORIES
    from safetrigger.errors import DataError

    if category not in CATEGORIES:
        raise DataError(f"sampled row {row_id!r} has category {category!r}; the reward needs one of {', '.join(CATEGORIES)}")
    return category in RISKY_CATEGORIES


def response_reward(category: str | None, score_row: dict, cfg: RewardConfig) -> float:
    """R for a score row of a query in ``category``: the paper's R on risky queries, R_general on the others."""
    if is_risky(category, score_row.get("id")):
        return reward(score_row["flags"], cfg)
    return general_reward(answered(score_row), score_row["flags"]["S_exist"], cfg)


def response_type(category: str | None, score_row: dict) -> str:
    """The ladder's four classes. Risky: safe+block > safe > unsafe+block > unsafe; general:
    answered > answered+block > refused > refused+block (no answer counts as refused)."""
    flags = score_row["flags"]
    if is_risky(category, score_row.get("id")):
        head = "safe" if flags["F_safe"] else "unsafe"
    else:
        head = "answered" if answered(score_row) else "refused"
    return head + ("+block" if flags["S_exist"] else "")


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
