"""Generation with transformers' ``generate``: batched, left-padded, length-sorted.

Supports several samples per prompt, stop strings, per-sample finish reasons and token
counts, and a progress bar with token rates. Reproducibility: the same prompts, batch size
and seed give the same samples (each batch is seeded from ``seed`` and its index).
"""

from __future__ import annotations

import time

from safetrigger.generation.base import (OUTSIDE, BlockSpare, Completion, GenerationBackend, NextToken, SamplingParams, TextDeltas, completion_from_ids,
                                         end_token_ids)


class _Streamer:
    """A ``generate`` streamer: checks ``should_stop`` at every step and, for a single
    sequence, passes ``on_text`` each new piece of decoded text (:class:`TextDeltas`)."""

    def __init__(self, tokenizer, end_ids, on_text=None, should_stop=None):
        self.on_text, self.should_stop = on_text, should_stop
        self.deltas = TextDeltas(tokenizer, end_ids)
        self.prompt_seen = False

    def put(self, value) -> None:
        from safetrigger.generation.base import GenerationCancelled

        if self.should_stop is not None and self.should_stop():
            raise GenerationCancelled()
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        if self.on_text is None:
            return
        delta = self.deltas.feed(value.reshape(-1).tolist())
        if delta:
            self.on_text(delta)

    def end(self) -> None:
        pass


class TransformersBackend(GenerationBackend):
    name = "transformers"
    streams_tokens = True

    def __init__(self, model, tokenizer, batch_size: int = 32, progress: bool = True, end_tokens: list[str] | None = None,
                 desc: str = "generate"):
        self.model = model
        self.desc = desc  # progress-bar label: the stage that generates
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.end_ids = end_token_ids(tokenizer, end_tokens)
        self.spare = BlockSpare.of(tokenizer)
        self.stats = {"prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}

    def identity(self) -> dict:
        return {
            "backend": self.name,
            "model": getattr(self.model.config, "_name_or_path", ""),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "device": str(self.model.device),
            "batch_size": self.batch_size,
        }

    def complete(self, prompts: list[str], params: SamplingParams, num_samples: int = 1, *, on_text=None,
                 should_stop=None) -> list[list[Completion]]:
        import torch

        from safetrigger.progress import progress_bar

        tok = self.tokenizer
        encoded = tok(prompts, add_special_tokens=False)["input_ids"]
        # One row per (prompt, sample); longest first so the first batch shows the memory peak.
        rows = [(p, s) for p in range(len(prompts)) for s in range(num_samples)]
        rows.sort(key=lambda r: (-len(encoded[r[0]]), r[0], r[1]))
        results: list[list[Completion | None]] = [[None] * num_samples for _ in prompts]
        pad_id = tok.pad_token_id
        bar = progress_bar(total=len(rows), desc=self.desc, unit="seq", disable=not self.progress)
        t0 = time.perf_counter()
        for b, start in enumerate(range(0, len(rows), self.batch_size)):
            batch = rows[start : start + self.batch_size]
            ids = [encoded[p] for p, _ in batch]
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad_id if pad_id is not None else 0, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for i, x in enumerate(ids):
                input_ids[i, width - len(x) :] = torch.tensor(x)
                mask[i, width - len(x) :] = 1
            torch.manual_seed(params.seed + b)
            kwargs = dict(
                max_new_tokens=params.max_new_tokens,
                eos_token_id=self.end_ids,
                pad_token_id=pad_id,
                do_sample=params.temperature > 0,
            )
            if params.temperature > 0:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            if params.repetition_penalty != 1.0:
                spare = self.spare if params.penalty_spares_format else None
                kwargs["logits_processor"] = repetition_penalty(params.repetition_penalty, width, spare, params.penalty_spares_leading)
            if params.stop:
                kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
            if on_text is not None or should_stop is not None:
                if on_text is not None and len(rows) != 1:
                    raise ValueError("on_text streams one completion: one prompt, one sample")
                kwargs["streamer"] = _Streamer(tok, self.end_ids, on_text, should_stop)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids.to(self.model.device), attention_mask=mask.to(self.model.device), **kwargs
                )
            gen = out[:, width:].tolist()
            for (p, s), g in zip(batch, gen):
                results[p][s] = self._finish(g, len(encoded[p]), params, pad_id)
                self.stats["completion_tokens"] += results[p][s].completion_tokens
                self.stats["prompt_tokens"] += len(encoded[p])
            elapsed = time.perf_counter() - t0
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{self.stats['completion_tokens'] / max(elapsed, 1e-9):.0f}")
        bar.close()
        self.stats["seconds"] += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    def _finish(self, gen: list[int], prompt_len: int, params: SamplingParams, pad_id: int | None) -> Completion:
        return completion_from_ids(self.tokenizer, gen, self.end_ids, prompt_len, params, pad_id)

    def next_token_probs(self, prompts: list[str], token_ids: list[int]) -> list[NextToken]:
        """One forward pass per batch of left-padded prompts; similar lengths share a batch."""
        import torch

        from safetrigger.progress import progress_bar

        tok, model = self.tokenizer, self.model
        out: list[NextToken | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        tok.padding_side = "left"
        device = next(model.parameters()).device
        starts = range(0, len(order), self.batch_size)
        for start in progress_bar(starts, desc=self.desc, unit="batch", disable=not self.progress or len(starts) < 2):
            idx = order[start : start + self.batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                probs = model(**enc).logits[:, -1, :].float().softmax(-1)
            top = probs.topk(5, dim=-1)
            for row, i in enumerate(idx):
                out[i] = NextToken({t: float(probs[row, t]) for t in token_ids},
                                   [(int(t), float(p)) for t, p in zip(top.indices[row], top.values[row])])
        return out  # type: ignore[return-value]

    def next_token_entropies(self, seqs: list[list[int]]) -> list[float]:
        from safetrigger.evaluation.entropy import next_token_entropies

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return next_token_entropies(self.model, seqs, pad, self.batch_size)


def repetition_penalty(penalty: float, prompt_width: int, spare: BlockSpare | None = None, leading: bool = False):
    """HF's repetition penalty over the tokens this call generates only (not the prompt), with
    ``spare``'s token ids left unpenalized while a ``<safe>`` block is open (:class:`BlockSpare`).

    Why: HF (and vLLM) also penalize every prompt token, and every prompt here holds the format
    markup — ``<think>``, ``</think>``, chat tags — whose tokens (``<``, ``\n``) a Safe-Trigger
    model must emit to open ``<safe>``. With the default, penalty 1.2 cut the demo ST-S from
    P(``<safe>``) ~ 0.2 to no block at all; loops, what the penalty is for, happen in the output.
    ``leading``: spare them also at the start of the output (:meth:`BlockSpare.start_state`).
    """
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    return LogitsProcessorList([_SparingPenalty(RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=prompt_width), spare, leading)])


class _SparingPenalty:
    """HF's penalty processor; in rows inside a ``<safe>`` block or just after it, the spared
    ids' logits are put back after it ran."""

    def __init__(self, hf, spare: BlockSpare | None, leading: bool = False):
        self.hf, self.spare, self.leading = hf, spare, leading
        self.penalty, self.prompt_ignore_length = hf.penalty, hf.prompt_ignore_length
        self.states: list[int] | None = None  # per row: BlockSpare.state after `self.seen` tokens
        self.seen = 0

    def __call__(self, input_ids, scores):
        if self.spare is None or not self.spare.ids:
            return self.hf(input_ids, scores)
        rows = input_ids.tolist()  # the rows of one generate call keep their order
        if self.states is None:  # the first call holds the (left-padded) prompts only
            self.states = [self.spare.start_state(r, self.leading) for r in rows]
        else:
            self.states = [self.spare.state(r, was, self.seen) for r, was in zip(rows, self.states)]
        self.seen = input_ids.shape[1]
        spared = list(self.spare.ids)
        kept = scores[:, spared].clone()
        out = self.hf(input_ids, scores)
        for b, state in enumerate(self.states):
            if state != OUTSIDE:
                out[b, spared] = kept[b]
        return out
