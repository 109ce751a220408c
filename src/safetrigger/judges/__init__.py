"""Judges: decide whether a final answer is unsafe, with pinned identity and raw evidence.

``make_judge(name, **options)`` builds one by name (``list_judges()`` lists them). Offline
built-ins measure *refusal*, not harm (see :mod:`safetrigger.judges.refusal`); ``llama-guard``
scores harm and ``llm-rubric`` asks any chat model a yes/no rubric, each on a local model or an
OpenAI-compatible endpoint. Importing this package is cheap: model weights load on a judge's
first batch.
"""

from safetrigger.judges.base import (
    Judge,
    JudgeItem,
    Verdict,
    judge_from_config,
    judge_options,
    list_judges,
    make_judge,
    register_judge,
)


def refusal_judge_accuracy(*args, **kwargs):
    """See :func:`safetrigger.judges.accuracy.refusal_judge_accuracy` (imported on call)."""
    from safetrigger.judges.accuracy import refusal_judge_accuracy as f

    return f(*args, **kwargs)


__all__ = [
    "Judge", "JudgeItem", "Verdict", "judge_from_config", "judge_options", "list_judges", "make_judge", "register_judge",
    "refusal_judge_accuracy",
]
