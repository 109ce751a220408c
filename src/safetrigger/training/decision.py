"""The decision token of an SFT row, and an SFT loss that weights it (``sft.decision_weight``).

The decision token is the first non-whitespace token after the final ``</think>``: there the
model chooses between opening a ``<safe>`` block and starting its answer. Why weight it: in a
184-token row it is one trained token, about 0.5 % of the loss, yet it alone decides whether
the trigger follows the risk. On the dev split, more general pairs (M‴..M⁗) and more SFT rows
(M⁶) moved the block everywhere at once, never on risky prompts only.

Positions come from character offsets in the rendered text, not from a token pattern: a
byte-level BPE may merge ``</think>`` with its neighbours, and in R1/Qwen3 it is one special token.
"""

from __future__ import annotations

from functools import lru_cache

from safetrigger.errors import ConfigError, SafeTriggerError
from safetrigger.response_format import THINK_CLOSE
from safetrigger.training.data import rendered_offsets


def decision_char(content: str) -> int | None:
    """Index in ``content`` of the first non-whitespace character after the last ``</think>``
    (None when there is no ``</think>`` or nothing follows it)."""
    at = content.rfind(THINK_CLOSE)
    if at < 0:
        return None
    rest = content[at + len(THINK_CLOSE):]
    stripped = len(rest) - len(rest.lstrip())
    return None if stripped == len(rest) else at + len(THINK_CLOSE) + stripped


def decision_index(tokenizer, messages: list[dict], input_ids: list[int], end_of_turn: str) -> int | None:
    """Index in ``input_ids`` (the rendered conversation, as TRL tokenized it) of the token that
    holds the final assistant turn's decision character; None when the turn has no decision."""
    content = messages[-1]["content"]
    char = decision_char(content)
    if char is None:
        return None
    spans, offsets = rendered_offsets(tokenizer, messages, input_ids, end_of_turn, "decision token")
    target = spans[-1][0] + char
    for i, (a, b) in enumerate(offsets):
        if a <= target < b or a > target:  # a > target: the character was merged into the previous token's tail
            return i
    return None


def decision_table(tokenizer, examples, dataset, end_of_turn: str) -> dict[tuple[int, ...], int]:
    """{tokenized row: decision index} for every row; refuses a row without a decision, since
    weighting nothing there would silently train it as plain SFT."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("sft.decision_weight needs a fast tokenizer (character offsets); set sft.decision_weight=1")
    table = {}
    for ex, row in zip(examples, dataset):
        ids = list(row["input_ids"])
        at = decision_index(tokenizer, ex.messages, ids, end_of_turn)
        if at is None:
            raise SafeTriggerError(f"row {ex.id!r}: no text after '{THINK_CLOSE}' in the assistant turn, so no decision token to weight; "
                                   "set sft.decision_weight=1 or drop the row")
        table[tuple(ids)] = at
    return table


def decision_weighted_loss(logits, labels, decision, weight: float, num_items=None):
    """Next-token NLL summed over trained tokens with the token at ``decision[b]`` (an index into
    ``labels``; -1 = none) counted ``weight`` times, divided by the trained-token count (or
    ``num_items``, the count over a whole accumulated batch). weight 1 = transformers' loss."""
    import torch
    import torch.nn.functional as F

    target = labels[:, 1:]
    mask = target != -100
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), target.masked_fill(~mask, 0), reduction="none") * mask
    weights = torch.ones_like(nll)
    rows = (decision > 0).nonzero().squeeze(1)
    weights[rows, decision[rows] - 1] = weight  # logits at t-1 predict the token at t
    count = mask.sum() if num_items is None else num_items
    return (nll * weights).sum() / torch.as_tensor(count, device=nll.device).clamp(min=1)


@lru_cache(maxsize=1)
def weighted_trainer_class():
    """``trl.SFTTrainer`` whose loss weights the decision token (imported lazily: trl is heavy).
    Set ``decision_weight`` and ``decision_positions`` (a :func:`decision_table`) before training."""
    import torch
    from trl import SFTTrainer

    class DecisionWeightedSFTTrainer(SFTTrainer):
        decision_weight: float = 1.0
        decision_positions: dict = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
            decision = torch.full((labels.shape[0],), -1, dtype=torch.long, device=labels.device)
            mask = inputs.get("attention_mask")
            for b in range(labels.shape[0]):
                real = mask[b].nonzero().squeeze(1) if mask is not None else torch.arange(labels.shape[1], device=labels.device)
                at = self.decision_positions.get(tuple(inputs["input_ids"][b, real].tolist()))
                if at is None:
                    raise SafeTriggerError("decision-weighted SFT: a batch row is not one of the measured rows (the collator changed the tokens)")
                decision[b] = real[at]
            loss = decision_weighted_loss(outputs.logits, labels, decision, self.decision_weight, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as TRL: num_items counts every rank's tokens, DDP averages
            return (loss, outputs) if return_outputs else loss

    return DecisionWeightedSFTTrainer
