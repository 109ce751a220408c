"""First-answer-token entropy: how undecided a model is when it starts its final answer.

For each response, one forward pass over the prompt + the response up to where the final
answer begins (reasoning, the ``<safe>`` block when there is one, and the whitespace after
``</think>`` / ``</safe>``); the entropy (nats) of the next-token distribution there is the
entropy of the first answer token. The text is re-tokenized as a whole and the position found
from character offsets, so the whitespace before the answer tokenizes as it did in context
(a prompt cut after ``\\n\\n`` would tokenize it differently, see ``generation.reasoning``).
Responses without an answer get None.
"""

from __future__ import annotations

from safetrigger.response_format import THINK_OPEN


def answer_context(prompt: str, row: dict) -> tuple[str, int] | None:
    """``(text, start)``: prompt + response, and the character offset where the final answer
    starts; None when there is no answer."""
    answer = (row.get("answer") or "").strip()
    response = row.get("response") or ""
    if not answer or not response.endswith(answer):
        return None
    opener = THINK_OPEN + "\n"
    if prompt.endswith(opener) and response.startswith(opener):  # the prompt opened the reasoning
        response = response[len(opener):]
    text = prompt + response
    return text, len(text) - len(answer)


def prefix_ids(tokenizer, text: str, start: int) -> list[int] | None:
    """Token ids of ``text`` before the token that holds character ``start``."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow tokenizers have no offsets: tokenize the prefix alone
        ids = tokenizer(text[:start], add_special_tokens=False)["input_ids"]
        return ids or None
    k = next((i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > start), None)
    return enc["input_ids"][:k] if k else None


def next_token_entropies(model, seqs: list[list[int]], pad_id: int, batch_size: int = 8) -> list[float]:
    """Entropy (nats) of the next-token distribution after each id sequence (left-padded batches)."""
    import torch

    device = next(model.parameters()).device
    out: list[float] = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.tensor([[pad_id] * (width - len(seqs[i])) + seqs[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(seqs[i])) + [1] * len(seqs[i]) for i in idx], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # padding must not shift positions
        with torch.no_grad():
            try:  # logits of the last position only: a long reasoning x a large vocabulary is gigabytes
                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits
            except TypeError:  # a model class without logits_to_keep
                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        logp = logits[:, -1, :].float().log_softmax(-1)
        for i, h in zip(idx, (-(logp.exp() * logp).sum(-1)).tolist()):
            out[i] = round(h, 6)
    return out


def first_answer_entropies(tokenizer, backend, prompts: list[str], rows: list[dict]) -> list[float | None]:
    """First-answer-token entropy of each row (its prompt as rendered for generation), or None;
    the distribution comes from ``backend`` (transformers or vLLM: one scoring path)."""
    seqs = []
    for prompt, row in zip(prompts, rows):
        ctx = answer_context(prompt, row)
        seqs.append(prefix_ids(tokenizer, *ctx) if ctx else None)
    todo = [i for i, s in enumerate(seqs) if s]
    values = backend.next_token_entropies([seqs[i] for i in todo]) if todo else []
    out: list[float | None] = [None] * len(rows)
    for i, h in zip(todo, values):
        out[i] = h
    return out
