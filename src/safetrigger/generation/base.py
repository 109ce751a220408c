"""The generation interface every backend implements (transformers now; vLLM and
OpenAI-compatible servers later): rendered prompt text in, completions out.

Text-in/text-out keeps backends interchangeable: chat templates and the reasoning protocol
(see reasoning.py) live above this layer, so a server's /v1/completions endpoint fits as well
as a local model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    """Token budget of this call."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    """Nucleus mass when sampling."""
    stop: list[str] = field(default_factory=list)
    """Stop strings; the matched one is cut from the text and reported."""
    repetition_penalty: float = 1.0
    """>1 discourages repeating tokens (1.0 = off)."""
    seed: int = 0
    """Seed for sampling (backends document their reproducibility scope)."""


@dataclass
class Completion:
    text: str
    """Generated text, without the stop string or end-of-turn token."""
    finish_reason: str
    """'stop' (a stop string matched), 'eos' (end of turn), or 'length' (budget hit)."""
    prompt_tokens: int
    completion_tokens: int
    stop_string: str | None = None
    """Which stop string ended it, if any."""

    def to_dict(self) -> dict:
        return asdict(self)


class GenerationBackend(ABC):
    """Generates completions for already-rendered prompts."""

    name: str = "backend"

    @abstractmethod
    def complete(self, prompts: list[str], params: SamplingParams, num_samples: int = 1) -> list[list[Completion]]:
        """For each prompt, ``num_samples`` completions (outer list aligned with ``prompts``)."""

    def identity(self) -> dict:
        """What generated the text, for manifests."""
        return {"backend": self.name}
