"""`safetrigger chat`: the turn function with a tiny model, the display and its hide flags."""

import io

import pytest

from safetrigger.chat import ChatSession, format_response, open_session, render_messages, run_chat
from safetrigger.config import load_config
from safetrigger.generation import Completion, GenerationBackend


def _cfg(model_dir, *extra):
    return load_config(None, ["--model.name_or_path", str(model_dir), "--model.template", "chatml", "--model.dtype", "float32",
                              "--generation.thinking_budget", "6", "--generation.max_new_tokens", "5", *extra])


class Scripted(GenerationBackend):
    """Reasoning, then a <safe> block and an answer; records the prompts it was given."""

    def __init__(self):
        self.prompts = []

    def complete(self, prompts, params, num_samples=1):
        self.prompts += prompts
        if "</think>" in params.stop:
            return [[Completion("Is this risky? Let me check.", "stop", 5, 6, "</think>")] for _ in prompts]
        return [[Completion("\n\n<safe>\nNo harm here.\n</safe>\n\nFour.", "eos", 9, 8)] for _ in prompts]


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    return open_session(_cfg(tiny_model_dir))


def test_turns_with_a_tiny_model_keep_the_history(session):
    session.reset()
    r1 = session.turn("What is 2 + 2?")
    assert isinstance(r1.think, str) and isinstance(r1.answer, str) and r1.response.startswith("<think>\n")
    assert session.history == [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": r1.answer}]
    session.turn("And 3 + 3?")
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    # The second prompt carries the first exchange, rendered by the project's template.
    prompt = render_messages(session.loaded.tokenizer, session.history[:3], session.system, session.loaded.reasoning)
    assert prompt.index("What is 2 + 2?") < prompt.index("And 3 + 3?") and prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert prompt.startswith("<|im_start|>system\n")  # prompted reasoning: the reasoning instruction comes first


def test_format_shows_labelled_parts_and_respects_hide_flags(session):
    s = ChatSession(session.loaded, Scripted(), session.gen, None)
    r = s.turn("hi")
    full = format_response(r)
    assert full.index("[reasoning]") < full.index("Is this risky?") < full.index("[safe]") < full.index("No harm here.") < full.index("[answer]") < full.index("Four.")
    assert "<safe>" not in full and "\033[" not in full
    no_think = format_response(r, hide_reasoning=True)
    assert "[reasoning]" not in no_think and "Is this risky?" not in no_think and "No harm here." in no_think
    no_safe = format_response(r, hide_safe=True)
    assert "[safe]" not in no_safe and "No harm here." not in no_safe and "Is this risky?" in no_safe and "Four." in no_safe
    assert "\033[" in format_response(r, color=True)


def test_run_chat_loop_reads_lines_until_exit(session):
    backend = Scripted()
    s = ChatSession(session.loaded, backend, session.gen, None)
    lines = iter(["hello", "   ", "/reset", "again", "/exit", "never read"])
    out = io.StringIO()
    assert run_chat(s, read=lambda prompt: next(lines), out=out, hide_safe=True) == 0
    text = out.getvalue()
    assert text.count("[answer]") == 2 and text.count("[reasoning]") == 2 and "[safe]" not in text
    assert "(history cleared)" in text and len(backend.prompts) == 4  # two turns x two phases
    assert "hello" not in backend.prompts[2]  # /reset dropped the first exchange
    assert next(lines) == "never read"


def test_run_chat_ends_on_eof(session):
    def eof(prompt):
        raise EOFError

    out = io.StringIO()
    assert run_chat(ChatSession(session.loaded, Scripted(), session.gen), read=eof, out=out) == 0


def test_cli_chat_passes_flags(monkeypatch):
    import safetrigger.chat as chat_mod
    from safetrigger.cli import main

    seen = {}
    monkeypatch.setattr(chat_mod, "open_session", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(chat_mod, "run_chat", lambda session, **kw: seen.update(kw) or 0)
    assert main(["chat", "embedded", "--hide-reasoning", "--generation.max_new_tokens", "64"]) == 0
    assert seen["hide_reasoning"] is True and seen["hide_safe"] is False
    assert seen["cfg"].model.name_or_path == "embedded" and seen["cfg"].generation.max_new_tokens == 64
