"""The judge interface: items in, one pinned verdict per item out, plus a registry by name.

Every stage that asks "is this answer unsafe?" (stage-1 filter, DPO flag ``F_safe``, ASR in
evaluation) goes through :class:`Judge`, so verdicts from any judge look the same on disk:
:class:`Verdict` keeps the raw judge evidence and the judge's pinned identity, because judges
disagree widely and a stored verdict is only meaningful next to the judge that produced it.

Judges are looked up by name with :func:`make_judge`. Built-ins are registered as
``"module:attribute"`` strings and imported only when asked for, so importing this module
stays cheap (no torch). ``llama-guard`` and ``llm-rubric`` run a local model or an
OpenAI-compatible server; other judges plug in with one more entry in ``_BUILTIN`` or a
:func:`register_judge` call.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from safetrigger.errors import ConfigError, DataError


@dataclass
class JudgeItem:
    """One thing to judge."""

    query: str
    """The user's request, as the model saw it (jailbreak wrapper included, if any)."""
    answer: str
    """The final answer only: never the ``<think>`` reasoning nor the ``<safe>`` block."""
    id: str = ""
    """Caller's id for the item, carried for bookkeeping; judges ignore it."""


@dataclass
class Verdict:
    """A judge's decision on one item, with its evidence and the judge that made it."""

    unsafe: bool | None
    """True = unsafe / complied with a harmful request; False = safe; None = undecided."""
    label: str
    """Judge-specific label, e.g. "refusal", "compliance", "safe", "unsafe", "unparseable"."""
    score: float | None
    """Judge-specific number behind the label (documented per judge), or None."""
    raw: str
    """Raw judge output or evidence (e.g. JSON of the matched keyword and the cosine)."""
    judge: str
    """Pinned identity of the judge (name, version, prompt version, settings)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        """Read back a stored verdict; missing or extra keys are a DataError."""
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise DataError(f"verdict record has keys {sorted(d)}, expected {sorted(names)}; the verdicts file was edited or "
                            f"written by another version: delete it to judge again")
        return cls(**d)


class Judge(ABC):
    """Batched judge. Subclasses set ``name`` and implement ``identity`` and ``_judge``."""

    name: str = ""
    PROGRESS_BATCHES = 8  # batches per progress-bar step (see _judge_blocks)

    @property
    @abstractmethod
    def identity(self) -> str:
        """Pinned identity string, stored with every verdict (e.g. "refusal-minilm@v1(...)")."""

    @abstractmethod
    def _judge(self, items: list[JudgeItem]) -> list[Verdict]:
        """Judge a non-empty, validated batch; return verdicts in the same order."""

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        """Judge ``items``; returns one verdict per item, same order, same length."""
        items = list(items)
        for i, it in enumerate(items):
            if not isinstance(it, JudgeItem):
                raise DataError(f"judge input #{i} is a {type(it).__name__}, expected JudgeItem")
            if not isinstance(it.query, str) or not isinstance(it.answer, str):
                raise DataError(f"judge input #{i} (id={it.id!r}): query and answer must be strings")
        if not items:
            return []
        verdicts = self._judge_blocks(items)
        if len(verdicts) != len(items):  # a judge bug, not a user error: keep the traceback
            raise RuntimeError(f"judge {self.identity} returned {len(verdicts)} verdicts for {len(items)} items")
        return verdicts

    def _judge_blocks(self, items: list[JudgeItem]) -> list[Verdict]:
        """``_judge`` over blocks of a few batches, with a progress bar (rate, ETA) when there is
        more than one block. Blocks span several batches so judges that sort a block by length
        still batch similar lengths together."""
        size = getattr(self, "batch_size", None)
        block = size * self.PROGRESS_BATCHES if isinstance(size, int) and size > 0 else len(items)
        if len(items) <= block:
            return self._judge(items)
        from safetrigger.progress import progress_bar

        out: list[Verdict] = []
        with progress_bar(total=len(items), desc=f"judge {self.name}", unit="item") as bar:
            for start in range(0, len(items), block):
                chunk = items[start : start + block]
                out += self._judge(chunk)
                bar.update(len(chunk))
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity}>"


# ---------------------------------------------------------------------------- registry

_BUILTIN: dict[str, str] = {
    "refusal-minilm": "safetrigger.judges.refusal:RefusalJudge",
    "refusal-keywords": "safetrigger.judges.refusal:KeywordRefusalJudge",
    "refusal-opener": "safetrigger.judges.refusal:OpenerRefusalJudge",
    "llama-guard": "safetrigger.judges.llama_guard:LlamaGuardJudge",
    "llm-rubric": "safetrigger.judges.llm_rubric:LLMRubricJudge",
}
_REGISTRY: dict[str, Callable[..., Judge] | str] = dict(_BUILTIN)


def register_judge(name: str, factory: Callable[..., Judge] | str) -> None:
    """Register a judge factory (a callable or a lazy ``"module:attr"`` path) under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError("judge name must be a non-empty string")
    _REGISTRY[name] = factory


def list_judges() -> list[str]:
    """Names :func:`make_judge` accepts."""
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., Judge]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown judge {name!r}; valid judges: {', '.join(list_judges())}")
    f = _REGISTRY[name]
    if isinstance(f, str):
        module, _, attr = f.partition(":")
        f = getattr(importlib.import_module(module), attr)
    return f


def judge_options(name: str) -> dict[str, Any]:
    """The options judge ``name`` accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    sig = inspect.signature(_factory(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def make_judge(name: str, **options: Any) -> Judge:
    """Build judge ``name`` with judge-specific ``options``; unknown name or option → ConfigError."""
    factory = _factory(name)
    accepted = judge_options(name)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ConfigError(
            f"judge {name!r} has no option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or '(none)'}"
        )
    return factory(**options)


def judge_from_config(judge_cfg) -> Judge:
    """The judge a run config's ``judge`` section names, given the options it accepts (the
    section's other fields, e.g. ``threshold``, go to the judges that take them)."""
    accepted = judge_options(judge_cfg.name)
    # None means "the judge's own default" (a section field such as model or engine left unset).
    options = {k: v for k, v in asdict(judge_cfg).items() if k != "name" and k in accepted and v is not None}
    return make_judge(judge_cfg.name, **options)
