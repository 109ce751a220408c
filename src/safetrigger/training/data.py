"""SFT data: read the assembled JSONL, measure token lengths, and check the loss mask.

Rows look like ``{"id": ..., "messages": [{"role": "system"|"user", ...}, ...,
{"role": "assistant", "content": "<think>...</think>\\n\\n[<safe>...</safe>\\n\\n]answer"}]}``.
Why measure here: TRL truncates silently at ``max_length`` (default 1024) and R1 traces run to
8k+ tokens, so the length is derived from the data and anything over a cap is refused or
dropped and counted, never cut. Why check the mask: a template without ``{% generation %}``
blocks, or one that renders the prompt differently, trains on the wrong tokens while the loss
still looks healthy.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from safetrigger.errors import DataError, SafeTriggerError
from safetrigger.jsonl import read_jsonl

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


@dataclass
class SFTExample:
    id: str
    messages: list[dict]


def read_sft_rows(path: Path) -> list[SFTExample]:
    """Rows of an SFT JSONL; any malformed row raises DataError naming its line."""
    path = Path(path)
    examples, seen = [], set()
    for n, row in read_jsonl(path):
        where = f"line {n} of {path}"
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where} has no 'messages' list")
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: every message needs a role ({'/'.join(ROLES)}) and string content, got {str(m)[:80]!r}")
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            raise DataError(f"{where} does not end with a non-empty assistant message (the training target)")
        if not any(m["role"] == "user" for m in msgs):
            raise DataError(f"{where} has no user message")
        rid = str(row.get("id", f"line{n}"))
        if rid in seen:
            raise DataError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        examples.append(SFTExample(rid, [{"role": m["role"], "content": m["content"]} for m in msgs]))
    if not examples:
        raise DataError(f"{path} holds no training rows")
    return examples


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def token_lengths(tokenizer, examples: list[SFTExample]) -> list[int]:
    """Token count of each full conversation, rendered exactly as TRL will (chat template)."""
    return [len(tokenizer.apply_chat_template(ex.messages, tokenize=True, return_dict=True)["input_ids"]) for ex in examples]


def apply_length_limit(examples, lengths, limit: int | None, on_overlong: str, section: str = "sft"):
    """Keep examples within ``limit`` tokens: 'error' refuses any overlong one, 'drop' drops and counts them."""
    if limit is None:
        return examples, lengths, 0
    over = [n for n in lengths if n > limit]
    if not over:
        return examples, lengths, 0
    if on_overlong == "error":
        raise SafeTriggerError(
            f"{len(over)} of {len(lengths)} {section.upper()} examples exceed the {limit}-token limit (longest: {max(over)} tokens); "
            f"raise {section}.max_length_cap, or set {section}.on_overlong=drop to drop them (counted in train_stats.json)"
        )
    keep = [(e, n) for e, n in zip(examples, lengths) if n <= limit]
    if not keep:
        raise SafeTriggerError(f"all {len(lengths)} {section.upper()} examples exceed the {limit}-token limit; raise {section}.max_length_cap")
    log.warning(f"dropping %d of %d {section.upper()} examples longer than %d tokens (longest: %d)", len(over), len(lengths), limit, max(over))
    return [e for e, _ in keep], [n for _, n in keep], len(over)


def assistant_spans(text: str, messages: list[dict], end_of_turn: str) -> list[tuple[int, int]]:
    """Character spans of each assistant turn's content + end-of-turn token in the rendered text
    (our templates render assistant content verbatim, so each is found in order)."""
    spans, pos = [], 0
    for m in messages:
        if m["role"] != "assistant":
            continue
        target = m["content"] + end_of_turn
        start = text.find(target, pos)
        if start < 0:
            raise SafeTriggerError(
                "loss-mask check: the chat template does not render the assistant turn verbatim followed by "
                f"{end_of_turn!r}; training on it would not teach the think + safe + answer format"
            )
        spans.append((start, start + len(target)))
        pos = start + len(target)
    return spans


def rendered_offsets(tokenizer, messages: list[dict], input_ids: list[int], end_of_turn: str, what: str):
    """(assistant turns' character spans, each token's character offsets) of the conversation
    rendered by the chat template; refuses when ``input_ids`` are not that rendering's tokens.
    Needs a fast tokenizer (offsets)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = assistant_spans(text, messages, end_of_turn)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(input_ids):
        raise SafeTriggerError(f"{what}: the training tokens differ from the rendered chat template's tokens")
    return spans, enc["offset_mapping"]


def check_loss_mask(tokenizer, messages: list[dict], input_ids: list[int], labels: list[int], end_of_turn: str) -> int:
    """Check that ``labels`` (as TRL built them) train exactly the assistant turns.

    Independent of the template's ``{% generation %}`` markers: the conversation is rendered as
    text, each assistant turn (content + end-of-turn token) located in it, and the tokens starting
    inside those character spans must be exactly the labelled ones; no system/user/markup token
    may be labelled and the final turn must be covered entirely. Returns the number of trained
    tokens; raises SafeTriggerError on any mismatch.
    """
    if len(labels) != len(input_ids):
        raise SafeTriggerError(f"loss-mask check: {len(labels)} labels for {len(input_ids)} tokens")
    trained = {i for i, t in enumerate(labels) if t != -100}
    if not trained:
        raise SafeTriggerError(
            "loss-mask check: an example has no trained tokens; the chat template must wrap the assistant turn "
            "in {% generation %}...{% endgeneration %} (see safetrigger/chat_templates)"
        )
    if any(labels[i] != input_ids[i] for i in trained):
        raise SafeTriggerError("loss-mask check: labels differ from the input tokens they should copy")
    if not getattr(tokenizer, "is_fast", False):
        log.warning("loss-mask check: slow tokenizer (no offsets); only checked that tokens are trained")
        return len(trained)
    spans, offsets = rendered_offsets(tokenizer, messages, input_ids, end_of_turn, "loss-mask check")
    expected = {i for i, (a, b) in enumerate(offsets) if b > a and any(s <= a < e for s, e in spans)}
    leaked = sorted(trained - expected)
    if leaked:
        bad = tokenizer.decode([input_ids[i] for i in leaked])
        raise SafeTriggerError(f"loss-mask check: {len(leaked)} prompt/markup tokens are trained ({bad[:60]!r}); fix the chat template's generation block")
    missing = sorted(expected - trained)
    if missing:
        bad = tokenizer.decode([input_ids[i] for i in missing])
        raise SafeTriggerError(f"loss-mask check: {len(missing)} assistant tokens are not trained ({bad[:60]!r}); fix the chat template's generation block")
    return len(trained)
