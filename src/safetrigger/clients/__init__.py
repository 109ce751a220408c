"""Clients of external model servers (no network activity at import time)."""

from safetrigger.clients.openai_compat import OpenAIClient

__all__ = ["OpenAIClient"]
