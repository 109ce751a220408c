"""``safetrigger serve MODEL``: an OpenAI-compatible HTTP server on a local model.

Endpoints (under ``/v1``):

* ``GET /models`` — the one served model;
* ``POST /chat/completions`` — rendered with the project's chat template and generated with
  the two-phase reasoning protocol; the reply is split with ``response_format.parse`` into
  ``content`` (final answer), ``reasoning_content`` (the ``<think>`` text, as vLLM/DeepSeek
  name it) and ``safe_content`` (the ``<safe>`` analysis, None when the model wrote none).
  ``stream: true`` sends SSE chunks ending with ``data: [DONE]``; the chunks are sent once the
  reply is generated (no token-by-token streaming). Extra field ``thinking_budget``;
  ``max_tokens`` / ``max_completion_tokens`` bound the part after the reasoning.
* ``POST /completions`` — raw prompt text in, text out (what ``generation.backend: openai``
  sends, so the project's own client can drive this server); ``stop_reason`` tells a stop
  string from end of turn, as vLLM does.

One model is loaded, so requests are generated one at a time (a lock). Bad requests get
OpenAI-style 4xx errors ``{"error": {"message", "type", "param", "code"}}``. Binds
127.0.0.1 unless told otherwise; ``--api-key`` makes every request need ``Authorization:
Bearer KEY``.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at
# runtime, and some name classes imported inside create_app.
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- request bodies


class _Sampling(BaseModel):
    # Unknown OpenAI fields (user, logprobs, …) are ignored, as vLLM does.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    repetition_penalty: float | None = Field(None, gt=0)
    stream: bool = False


class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart] | None = None


class ChatRequest(_Sampling):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    thinking_budget: int | None = Field(None, ge=1)
    stream_options: dict | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class APIError(Exception):
    """An OpenAI-style error response."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def _error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---------------------------------------------------------------------------- the app


def create_app(loaded, backend, gen, system: str | None, model_name: str, api_key: str | None = None):
    """The FastAPI app serving ``loaded`` (tokenizer, reasoning mode) through ``backend``."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from safetrigger.chat import respond
    from safetrigger.generation import SamplingParams

    app = FastAPI(title="safetrigger", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    created = int(time.time())
    config = getattr(loaded.model, "config", None)
    max_context = getattr(config, "max_position_embeddings", None)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return JSONResponse(_error_body(e.message, e.type, e.param, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        err = (e.errors() or [{}])[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            return JSONResponse(_error_body("request body is not valid JSON", "invalid_request_error"), status_code=400)
        param = ".".join(loc) or None
        return JSONResponse(_error_body(f"{param or 'body'}: {err.get('msg', 'invalid value')}", "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        return JSONResponse(_error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception):
        log.exception("request failed")
        return JSONResponse(_error_body(f"internal error: {type(e).__name__}: {e}", "server_error"), status_code=500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key (send Authorization: Bearer KEY).", code="invalid_api_key")

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"The model `{name}` does not exist (this server serves `{model_name}`).", param="model", code="model_not_found")

    def check_length(n_tokens: int, budget: int) -> None:
        if max_context is not None and n_tokens + budget > max_context:
            raise APIError(400, f"This model's maximum context length is {max_context} tokens; the prompt has {n_tokens} "
                                f"and up to {budget} more were asked for.", param="messages", code="context_length_exceeded")

    def stops(req: _Sampling) -> list[str]:
        s = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if any(not x for x in s):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return s

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "safetrigger"}]}

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    def completions(req: CompletionRequest):
        check_model(req.model)
        if req.stream:
            raise APIError(400, "stream is not supported on /v1/completions (use /v1/chat/completions)", param="stream")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts or any(not p for p in prompts):
            raise APIError(400, "prompt must be a non-empty string or a list of them", param="prompt")
        params = SamplingParams(
            max_new_tokens=req.max_tokens or gen.max_new_tokens,
            temperature=gen.temperature if req.temperature is None else req.temperature,
            top_p=gen.top_p if req.top_p is None else req.top_p,
            stop=stops(req),
            repetition_penalty=req.repetition_penalty or gen.repetition_penalty,
            seed=gen.seed if req.seed is None else req.seed,
        )
        lengths = [len(loaded.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        for k in lengths:
            check_length(k, params.max_new_tokens)
        with lock:
            outs = backend.complete(prompts, params, req.n)
        choices, used = [], 0
        for i, row in enumerate(outs):
            for s, c in enumerate(row):
                choices.append({
                    "index": i * req.n + s, "text": c.text, "logprobs": None,
                    "finish_reason": "length" if c.finish_reason == "length" else "stop",
                    "stop_reason": c.stop_string if c.finish_reason == "stop" else None,
                })
                used += c.completion_tokens
        prompt_tokens = sum(lengths)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": model_name,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": used, "total_tokens": prompt_tokens + used},
        }

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    def chat_completions(req: ChatRequest):
        check_model(req.model)
        messages = [_plain(m, i) for i, m in enumerate(req.messages)]
        if messages[-1]["role"] != "user":
            raise APIError(400, "the last message must come from the user", param="messages")
        g = replace(
            gen,
            max_new_tokens=req.max_completion_tokens or req.max_tokens or gen.max_new_tokens,
            thinking_budget=req.thinking_budget or gen.thinking_budget,
            temperature=gen.temperature if req.temperature is None else req.temperature,
            top_p=gen.top_p if req.top_p is None else req.top_p,
            stop=stops(req) or list(gen.stop),
            repetition_penalty=req.repetition_penalty or gen.repetition_penalty,
            seed=gen.seed if req.seed is None else req.seed,
            num_samples=req.n,
            progress=False,
        )
        from safetrigger.chat import render_messages

        prompt = render_messages(loaded.tokenizer, messages, system, loaded.reasoning)
        n_prompt = len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        check_length(n_prompt, g.max_new_tokens + (g.thinking_budget + 8 if loaded.reasoning != "off" else 0))
        with lock:
            replies = respond(loaded, backend, g, messages, system, req.n)
        cid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        used = sum(r.think_tokens + r.answer_tokens for r in replies)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used}
        fields = [{"content": r.answer, "reasoning_content": r.think, "safe_content": r.safe} for r in replies]
        finish = ["length" if r.answer_finish == "length" else "stop" for r in replies]
        if not req.stream:
            choices = [{"index": i, "message": {"role": "assistant", **f}, "finish_reason": fin, "logprobs": None}
                       for i, (f, fin) in enumerate(zip(fields, finish))]
            return {"id": cid, "object": "chat.completion", "created": now, "model": model_name, "choices": choices, "usage": usage}
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        chunks = list(_chunks(cid, now, model_name, fields, finish, usage if include_usage else None))
        return StreamingResponse(iter(chunks), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _plain(m: _Message, i: int) -> dict:
    """A message as the chat template takes it: role + plain-text content."""
    role = "system" if m.role == "developer" else m.role
    if isinstance(m.content, list):
        content = "".join(p.text for p in m.content)
    else:
        content = m.content or ""
    if role != "assistant" and not content:
        raise APIError(400, f"messages[{i}] ({m.role}) has no content", param=f"messages.{i}.content")
    return {"role": role, "content": content}


def _chunks(cid: str, created: int, model: str, fields: list[dict], finish: list[str], usage: dict | None):
    """SSE events of a finished reply: role, reasoning, <safe> analysis, answer, finish, [DONE]."""

    def event(choices: list[dict], **extra) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    for i, f in enumerate(fields):
        yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for key in ("reasoning_content", "safe_content", "content"):
            if f[key] is not None:
                yield event([{"index": i, "delta": {key: f[key]}, "finish_reason": None}])
        yield event([{"index": i, "delta": {}, "finish_reason": finish[i]}])
    if usage is not None:
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


# ---------------------------------------------------------------------------- running it


def make_server(cfg, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, served_name: str | None = None, log_level: str = "info"):
    """Load ``cfg.model`` and return a ready-to-run ``uvicorn.Server`` (``port=0``: any free port)."""
    import uvicorn

    from safetrigger.generation import make_backend, needs_weights
    from safetrigger.models import load_model, system_prompt

    gen = replace(cfg.generation, progress=False)
    loaded = load_model(cfg.model, weights=needs_weights(gen))
    backend = make_backend(loaded, gen)
    name = served_name or cfg.model.name_or_path
    app = create_app(loaded, backend, gen, system_prompt(cfg.model, loaded.reasoning), name, api_key=api_key or None)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can use the model", host)
    log.info("serving %s as '%s' at http://%s:%d/v1 (template %s, reasoning %s%s)", cfg.model.name_or_path, name, host, port,
             loaded.family, loaded.reasoning, ", API key required" if api_key else "")
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off"))


def bound_port(server) -> int:
    """The port a started server listens on (useful with ``port=0``)."""
    return server.servers[0].sockets[0].getsockname()[1]


def serve(cfg, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, served_name: str | None = None) -> None:
    """Serve until interrupted (Ctrl-C)."""
    make_server(cfg, host, port, api_key, served_name).run()
