"""Plumbing shared by the LLM judges (Llama-Guard, LLM rubric): endpoint chat functions,
prompt slot filling, and option checks.

An endpoint judge talks to a chat model through a ``chat_fn``: a callable that takes a list of
conversations (each a list of ``{"role", "content"}`` messages) and returns one assistant text
per conversation. Callers pass their own (tests, custom clients) or let the judge build one
from ``api_base`` / ``api_model`` / ``api_key_env`` over
``safetrigger.clients.openai_compat.OpenAIClient`` (concurrency, retries, temperature 0). Nothing here connects or reads a key
until the first batch is judged.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from safetrigger.errors import ConfigError, ModelError
from safetrigger.prompts import fill  # noqa: F401  (re-exported for the judges)

ChatFn = Callable[[list[list[dict]]], list[str]]
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def response_text(response: Any) -> str:
    """The assistant text of an OpenAI-style chat completion; anything else comes back as JSON,
    so a malformed reply is kept as evidence (and parses as unparseable) instead of crashing."""
    try:
        content = response["choices"][0]["message"]["content"]
        if isinstance(content, str):
            return content
    except (KeyError, IndexError, TypeError):
        pass
    try:
        return json.dumps(response, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(response)


def endpoint_chat_fn(api_base: str, api_model: str, api_key_env: str | None, max_tokens: int) -> ChatFn:
    """A chat_fn over an OpenAI-compatible server; the client is built on its first call."""
    client = None

    def chat(conversations: list[list[dict]]) -> list[str]:
        nonlocal client
        if client is None:
            try:
                from safetrigger.clients.openai_compat import OpenAIClient
            except ImportError as e:
                raise ModelError(f"endpoint judges need safetrigger.clients.openai_compat, which cannot be imported: {e}") from e
            key = os.environ.get(api_key_env) if api_key_env else None  # unset: no key (a local server needs none)
            client = OpenAIClient(base_url=api_base, api_key=key or None, model=api_model)
        return [response_text(r) for r in client.chat(conversations, temperature=0, max_tokens=max_tokens)]

    return chat


def call_chat(chat_fn: ChatFn, conversations: list[list[dict]]) -> list[str]:
    """Run ``chat_fn`` and check it answered every conversation (None counts as empty text)."""
    texts = list(chat_fn(conversations))
    if len(texts) != len(conversations):
        raise ModelError(f"judge chat_fn returned {len(texts)} replies for {len(conversations)} conversations; "
                         f"the judge endpoint must answer every one (check its logs, or lower the judge's batch_size)")
    return ["" if t is None else t if isinstance(t, str) else str(t) for t in texts]


def check_positive_int(judge: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"judge {judge} {name} must be a positive integer, got {value!r}")
    return value


def check_endpoint(judge: str, chat_fn: ChatFn | None, api_base: str | None, api_model: str | None) -> None:
    """chat_fn and api_base are two ways to name the endpoint: at most one of them."""
    if chat_fn is not None and not callable(chat_fn):
        raise ConfigError(f"judge {judge} chat_fn must be callable, got {type(chat_fn).__name__}")
    if chat_fn is not None and api_base:
        raise ConfigError(f"judge {judge}: give chat_fn or api_base, not both")
    if api_model is not None and not (api_base or chat_fn):
        raise ConfigError(f"judge {judge}: api_model is only used with api_base (or chat_fn)")
