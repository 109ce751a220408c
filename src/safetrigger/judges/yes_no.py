"""Yes/no questions answered by a model's next-token probabilities (rubrics and audits).

Used where the method asks a model a yes/no question about a response: the DPO flags
``T_full`` / ``S_full`` (METHOD.md stage 2, by default asked of the base model itself) and the
latent-safety-awareness audit. Reading P("Yes") vs P("No") at the first answer token, instead
of generating and parsing text, never fails to parse, works for weak models that would ramble,
and gives a graded score (the audit's AUROC needs one). The raw evidence — both masses and the
top tokens — is kept with every answer.
"""

from __future__ import annotations

import dataclasses
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
    """Asks a model yes/no questions (rendered with the project chat template) through any
    backend's next-token probabilities: transformers or vLLM, the same numbers to ~1e-5."""

    def __init__(self, loaded, batch_size: int = 8, threshold: float = 0.5, backend=None, generation=None):
        from safetrigger.config import GenerationConfig
        from safetrigger.generation import make_backend

        self.loaded = loaded
        self.threshold = threshold
        gen = dataclasses.replace(generation or GenerationConfig(), batch_size=batch_size, progress=True)
        self.backend = backend if backend is not None else make_backend(loaded, gen, desc="rubric yes/no")
        tok = loaded.tokenizer
        yes, no = first_token_ids(tok, YES_WORDS), first_token_ids(tok, NO_WORDS)
        shared = set(yes) & set(no)  # e.g. a bare space token: evidence for neither answer
        self.yes_ids = [t for t in yes if t not in shared]
        self.no_ids = [t for t in no if t not in shared]
        if not self.yes_ids or not self.no_ids:
            raise ModelError("the tokenizer gives 'Yes' and 'No' no distinct first token; yes/no scoring cannot work with it")

    @property
    def identity(self) -> dict:
        return {"scorer": "yes-no-logits@v1", "model": self.loaded.identity, "backend": self.backend.name, "threshold": self.threshold}

    def ask(self, questions: list[str]) -> list[YesNo]:
        """One answer per question (plain text of the user turn), same order."""
        from safetrigger.chat_templates import render_direct_prompt

        tok = self.loaded.tokenizer
        prompts = [render_direct_prompt(tok, self.loaded.family, q) for q in questions]
        nexts = self.backend.next_token_probs(prompts, self.yes_ids + self.no_ids)
        out = []
        for n in nexts:
            p_yes = sum(n.probs[t] for t in self.yes_ids)
            p_no = sum(n.probs[t] for t in self.no_ids)
            mass = p_yes + p_no
            score = p_yes / mass if mass > 0 else 0.0
            raw = json.dumps({
                "p_yes": round(p_yes, 6), "p_no": round(p_no, 6),
                "top": [[tok.decode([t]), round(p, 4)] for t, p in n.top],
            }, ensure_ascii=False)
            out.append(YesNo(score >= self.threshold, round(score, 6), round(mass, 6), raw))
        return out


def scorer_for(model_cfg, generation, batch_size: int = 8, threshold: float = 0.5) -> YesNoScorer:
    """A scorer for ``model_cfg`` on the configured generation backend. A server backend gives
    no next-token distribution, so with ``openai`` the scorer runs transformers here, as before."""
    from safetrigger.generation import needs_weights
    from safetrigger.models import load_model

    if generation.backend == "openai":
        generation = dataclasses.replace(generation, backend="transformers")
    return YesNoScorer(load_model(model_cfg, weights=needs_weights(generation)), batch_size, threshold, generation=generation)
