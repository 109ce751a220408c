"""Yes/no questions answered by a model's next-token probabilities (rubrics and audits).

Used where the method asks a model a yes/no question about a response: the DPO flags
``T_full`` / ``S_full`` (METHOD.md stage 2, by default asked of the base model itself) and the
latent-safety-awareness audit. Reading P("Yes") vs P("No") at the first answer token, instead
of generating and parsing text, never fails to parse, works for weak models that would ramble,
and gives a graded score (the audit's AUROC needs one). The raw evidence — both masses and the
top tokens — is kept with every answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from safetrigger.errors import ModelError

YES_WORDS = ("Yes", "yes", "YES", " Yes", " yes")
NO_WORDS = ("No", "no", "NO", " No", " no")


@dataclass
class YesNo:
    """One answer to a yes/no question."""

    answer: bool
    """True = yes (score >= threshold)."""
    score: float
    """P(yes) / (P(yes) + P(no)) at the first answer token."""
    mass: float
    """P(yes) + P(no): how much the model put on a yes/no answer at all (low = it wanted to say something else)."""
    raw: str
    """JSON: p_yes, p_no and the five most likely first tokens."""

    def to_dict(self) -> dict:
        return asdict(self)


def first_token_ids(tokenizer, words) -> list[int]:
    """Distinct first token of each word's tokenization (the ids whose mass counts as that word)."""
    ids = []
    for w in words:
        toks = tokenizer(w, add_special_tokens=False)["input_ids"]
        if toks and toks[0] not in ids:
            ids.append(toks[0])
    return ids


class YesNoScorer:
    """Asks a local model yes/no questions in batches (rendered with the project chat template)."""

    def __init__(self, loaded, batch_size: int = 8, threshold: float = 0.5):
        self.loaded = loaded
        self.batch_size = batch_size
        self.threshold = threshold
        tok = loaded.tokenizer
        yes, no = first_token_ids(tok, YES_WORDS), first_token_ids(tok, NO_WORDS)
        shared = set(yes) & set(no)  # e.g. a bare space token: evidence for neither answer
        self.yes_ids = [t for t in yes if t not in shared]
        self.no_ids = [t for t in no if t not in shared]
        if not self.yes_ids or not self.no_ids:
            raise ModelError("the tokenizer gives 'Yes' and 'No' no distinct first token; yes/no scoring cannot work with it")

    @property
    def identity(self) -> dict:
        return {"scorer": "yes-no-logits@v1", "model": self.loaded.identity, "threshold": self.threshold}

    def ask(self, questions: list[str]) -> list[YesNo]:
        """One answer per question (plain text of the user turn), same order."""
        import torch

        from safetrigger.chat_templates import render_direct_prompt
        from safetrigger.progress import progress_bar

        tok, model = self.loaded.tokenizer, self.loaded.model
        prompts = [render_direct_prompt(tok, self.loaded.family, q) for q in questions]
        out: list[YesNo | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        tok.padding_side = "left"
        device = next(model.parameters()).device
        starts = range(0, len(order), self.batch_size)
        for start in progress_bar(starts, desc="rubric yes/no", unit="batch", disable=len(starts) < 2):
            idx = order[start : start + self.batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                probs = model(**enc).logits[:, -1, :].float().softmax(-1)
            top = probs.topk(5, dim=-1)
            for row, i in enumerate(idx):
                p_yes = float(probs[row, self.yes_ids].sum())
                p_no = float(probs[row, self.no_ids].sum())
                mass = p_yes + p_no
                score = p_yes / mass if mass > 0 else 0.0
                raw = json.dumps({
                    "p_yes": round(p_yes, 6), "p_no": round(p_no, 6),
                    "top": [[tok.decode([int(t)]), round(float(p), 4)] for t, p in zip(top.indices[row], top.values[row])],
                }, ensure_ascii=False)
                out[i] = YesNo(score >= self.threshold, round(score, 6), round(mass, 6), raw)
        return out  # type: ignore[return-value]
