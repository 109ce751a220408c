"""Versioned prompt texts (safety analysis, audit, judge rubrics, reasoning instructions).

Prompts are files, not string literals, so a run's manifest can pin exactly which text was
used (``name`` includes its version, e.g. ``reasoning/prompted_system_v1``).
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from safetrigger.errors import ConfigError


def load_prompt(name: str) -> str:
    """Text of ``prompts/<name>.txt`` (``name`` like ``reasoning/prompted_system_v1``)."""
    path = resources.files(__package__).joinpath(f"{name}.txt")
    if not path.is_file():
        raise ConfigError(f"prompt '{name}' not found under safetrigger/prompts/ (expected {name}.txt)")
    return path.read_text(encoding="utf-8").strip()


def prompt_id(name: str) -> str:
    """Pinned identity: name plus a short content hash (catches edits without a version bump)."""
    return f"{name}#{hashlib.sha256(load_prompt(name).encode()).hexdigest()[:8]}"


def fill(template: str, **values: str) -> str:
    """``template`` with its ``{name}`` slots filled in one pass, so braces or slot names inside
    the inserted texts (user queries, model reasoning) are never re-read as slots. Every given
    name must appear as a slot: a prompt file missing one is a ConfigError."""
    missing = [f"{{{k}}}" for k in values if f"{{{k}}}" not in template]
    if missing:
        raise ConfigError(f"prompt lacks the slot(s) {', '.join(missing)}; add them to the prompt file where the text should go")
    slot = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return slot.sub(lambda m: values[m.group(1)], template)
