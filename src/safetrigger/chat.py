"""``safetrigger chat MODEL``: talk to a model in the terminal and see its reasoning, its
``<safe>`` analysis and its answer apart.

The conversation is rendered with the project's chat template and generated with the same
two-phase reasoning protocol as the pipeline (generation/reasoning.py), so what you see is
what the stages see. Earlier assistant turns go back into the history as their final answer
only (as OpenAI-style clients send them). ``safetrigger serve`` shares :func:`respond`.

Commands at the prompt: ``/exit`` (or EOF, Ctrl-D) quits, ``/reset`` forgets the history.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, TextIO

ROLES = ("system", "user", "assistant")
STYLES = {"reasoning": "2;3", "safe": "1;33", "answer": "1;32", "note": "2"}  # dim italic, bold yellow, bold green
LABELS = {"reasoning": "reasoning", "safe": "safe", "answer": "answer"}


def render_messages(tokenizer, messages: list[dict], system: str | None, reasoning: str) -> str:
    """Prompt text for a conversation (``[{role, content}]``) ending where the reply starts;
    ``system`` is put first unless the conversation has its own system message."""
    if system and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system}] + list(messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, open_think=reasoning != "off")


def respond(loaded, backend, gen, messages: list[dict], system: str | None, num_samples: int = 1, should_stop=None):
    """``num_samples`` replies (generation.reasoning.Response) to a conversation."""
    from safetrigger.generation import generate_responses

    prompt = render_messages(loaded.tokenizer, messages, system, loaded.reasoning)
    (row,) = generate_responses(backend, [prompt], gen, loaded.reasoning, num_samples, should_stop=should_stop)
    return row


@dataclass
class ChatSession:
    """A multi-turn conversation with one loaded model; :meth:`turn` needs no terminal."""

    loaded: object
    backend: object
    gen: object
    system: str | None = None
    history: list[dict] = field(default_factory=list)

    def turn(self, text: str):
        """Send one user message; returns the Response and extends the history."""
        messages = self.history + [{"role": "user", "content": text}]
        (r,) = respond(self.loaded, self.backend, self.gen, messages, self.system)
        self.history = messages + [{"role": "assistant", "content": r.answer}]
        return r

    def reset(self) -> None:
        self.history = []


def _paint(text: str, style: str, color: bool) -> str:
    return f"\033[{STYLES[style]}m{text}\033[0m" if color else text


def format_response(r, hide_reasoning: bool = False, hide_safe: bool = False, color: bool = False) -> str:
    """The reply as labelled blocks: reasoning, <safe> analysis (when the model wrote one), answer."""
    blocks = []
    if not hide_reasoning and r.think is not None:
        note = " (cut at the thinking budget)" if r.budget_hit else ""
        blocks.append((f"[{LABELS['reasoning']}]{note}", r.think, "reasoning"))
    if not hide_safe and r.safe is not None:
        note = "" if r.has_safe else " (block not closed)"
        blocks.append((f"[{LABELS['safe']}]{note}", r.safe, "safe"))
    note = " (cut at max_new_tokens)" if r.answer_finish == "length" else ""
    blocks.append((f"[{LABELS['answer']}]{note}", r.answer, "answer"))
    return "\n\n".join(f"{_paint(label, style, color)}\n{_paint(body, style, color) if style != 'answer' else body}"
                       for label, body, style in blocks)


def run_chat(
    session: ChatSession,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
    hide_reasoning: bool = False,
    hide_safe: bool = False,
    color: bool | None = None,
) -> int:
    """The read–reply loop. ``read(prompt)`` returns one line or raises EOFError."""
    if color is None:
        color = out.isatty() and "NO_COLOR" not in os.environ
    out.write(_paint("chat: /exit or Ctrl-D quits, /reset forgets the history", "note", color) + "\n")
    while True:
        try:
            line = read(_paint("you> ", "note", color) if color else "you> ")
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            session.reset()
            out.write(_paint("(history cleared)", "note", color) + "\n")
            continue
        try:
            r = session.turn(text)
        except KeyboardInterrupt:
            out.write(_paint("(interrupted)", "note", color) + "\n")
            continue
        out.write(format_response(r, hide_reasoning, hide_safe, color) + "\n\n")
        out.flush()


def open_session(cfg) -> ChatSession:
    """Load the configured model (tokenizer only for a server backend) into a session."""
    from safetrigger.generation import make_backend, needs_weights
    from safetrigger.models import load_model, system_prompt

    loaded = load_model(cfg.model, weights=needs_weights(cfg.generation))
    backend = make_backend(loaded, cfg.generation)
    return ChatSession(loaded, backend, cfg.generation, system_prompt(cfg.model, loaded.reasoning))
