"""``safetrigger serve MODEL``: an OpenAI-compatible HTTP server on a local model.

Endpoints (under ``/v1``):

* ``GET /models`` — the one served model;
* ``POST /chat/completions`` — rendered with the project's chat template and generated with
  the two-phase reasoning protocol; the reply is split with ``response_format.parse`` into
  ``content`` (final answer), ``reasoning_content`` (the ``<think>`` text, as vLLM/DeepSeek
  name it) and ``safe_content`` (the ``<safe>`` analysis, None when the model wrote none).
  ``stream: true`` sends SSE chunks ending with ``data: [DONE]``: token by token as the engine
  produces them when the backend streams (transformers, vllm) and ``n`` is 1; otherwise the finished
  reply in a few chunks. Extra field ``thinking_budget``; ``max_tokens`` /
  ``max_completion_tokens`` bound the part after the reasoning.
* ``POST /completions`` — raw prompt text in, text out (what ``generation.backend: openai``
  sends, so the project's own client can drive this server); ``stop_reason`` tells a stop
  string from end of turn, as vLLM does.

Under load and garbage (limits in the ``serve`` config section, :class:`ServeConfig`): bodies,
``max_tokens``, messages, prompts, ``n`` and stop strings are bounded (OpenAI-style 4xx
``{"error": {"message", "type", "param", "code"}}`` past them). One model generates one request
at a time on one engine thread; up to ``max_queue`` more wait, the next gets 429 at once. Each
request has ``request_timeout`` seconds: a queued one is dropped (503), a generating one is
stopped at its next token (504). Binds 127.0.0.1 unless told otherwise; ``--api-key`` makes
every request need ``Authorization: Bearer KEY``, compared in constant time and never logged.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at
# runtime, and some name classes imported inside create_app.
import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

_INT64 = 2**63 - 1

# ---------------------------------------------------------------------------- request bodies


class _Sampling(BaseModel):
    # Unknown OpenAI fields (user, logprobs, …) are ignored, as vLLM does.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)  # torch seeds are 64-bit; batches add their index
    repetition_penalty: float | None = Field(None, gt=0, le=10, allow_inf_nan=False)
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

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def _error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# ---------------------------------------------------------------------------- the engine queue


class Engine:
    """The one thread that runs the model, with a bounded queue in front of it.

    ``submit`` refuses (429) once ``1 + max_queue`` requests are in flight, instead of letting
    them pile up behind a lock; ``run`` waits at most ``timeout`` seconds: a job still queued
    is cancelled (503), a running one is told to stop (its ``should_stop`` turns true; the
    transformers and vllm backends abort at the next token) and answered 504."""

    def __init__(self, max_queue: int, timeout: float):
        self.max_queue, self.timeout = max_queue, timeout
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="safetrigger-engine")
        self.pending = 0
        self._lock = threading.Lock()

    def _release(self, _future) -> None:
        with self._lock:
            self.pending -= 1

    def submit(self, job, stop: threading.Event):
        with self._lock:
            if self.pending >= 1 + self.max_queue:
                raise APIError(429, f"the server is busy: {self.pending} requests are generating or queued "
                                    f"(serve.max_queue {self.max_queue}); retry shortly", type="rate_limit_error",
                               code="queue_full", headers={"Retry-After": "1"})
            self.pending += 1
        future = self.pool.submit(job, stop.is_set)
        future.add_done_callback(self._release)
        return future

    async def run(self, job):
        """Run ``job(should_stop)`` on the engine thread; its result, or an APIError."""
        stop = threading.Event()
        future = self.submit(job, stop)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
        except asyncio.TimeoutError:
            raise self.timed_out(future, stop) from None
        except asyncio.CancelledError:  # the client went away: free the engine
            if not future.cancel():
                stop.set()
            raise

    def timed_out(self, future, stop: threading.Event) -> APIError:
        if future.cancel():
            return APIError(503, f"the request waited {self.timeout:g}s in the queue without starting (serve.request_timeout); "
                                 f"retry later", type="server_error", code="queue_timeout", headers={"Retry-After": "1"})
        stop.set()
        return APIError(504, f"generation took longer than {self.timeout:g}s (serve.request_timeout) and was stopped; "
                             f"ask for fewer tokens", type="server_error", code="timeout")


# ---------------------------------------------------------------------------- limits on the raw request


class _BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413 before it is read into memory."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # chunked bodies carry no length up front
                from starlette.exceptions import HTTPException

                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body is larger than {self.limit} bytes (serve.max_body_bytes)"

    async def _refuse(self, send):
        body = json.dumps(_error_body(self._message(), "invalid_request_error", code="body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- the app


def create_app(loaded, backend, gen, system: str | None, model_name: str, api_key: str | None = None, limits=None):
    """The FastAPI app serving ``loaded`` (tokenizer, reasoning mode) through ``backend``;
    ``limits`` is a :class:`~safetrigger.config.ServeConfig` (defaults when None)."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from safetrigger.chat import render_messages, respond
    from safetrigger.config import ServeConfig
    from safetrigger.generation import SamplingParams

    limits = limits or ServeConfig()
    app = FastAPI(title="safetrigger", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
    engine = Engine(limits.max_queue, limits.request_timeout)
    app.state.engine = engine
    created = int(time.time())
    config = getattr(loaded.model, "config", None)
    max_context = getattr(config, "max_position_embeddings", None)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return JSONResponse(_error_body(e.message, e.type, e.param, e.code), status_code=e.status, headers=e.headers)

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
        code = "body_too_large" if e.status_code == 413 else None
        return JSONResponse(_error_body(str(e.detail), "invalid_request_error", code=code), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception):
        log.exception("request failed")
        return JSONResponse(_error_body(f"internal error: {type(e).__name__}", "server_error"), status_code=500)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        # Constant time: how long the check takes says nothing about how much of the key matched.
        if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), api_key.encode("utf-8")):
            raise APIError(401, "Incorrect or missing API key (send Authorization: Bearer KEY).", code="invalid_api_key")

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"The model `{name[:100]}` does not exist (this server serves `{model_name}`).", param="model", code="model_not_found")

    def check_limit(value: int | None, limit: int, param: str, what: str) -> None:
        if value is not None and value > limit:
            raise APIError(400, f"{param} is {value}; this server allows at most {limit} {what} (serve.{_LIMIT_FIELD[param]})",
                           param=param, code="limit_exceeded")

    def check_sampling(req: _Sampling) -> None:
        check_model(req.model)
        check_limit(req.n, limits.max_n, "n", "choices per request")
        check_limit(req.max_tokens, limits.max_tokens, "max_tokens", "tokens")

    def check_length(n_tokens: int, budget: int) -> None:
        if max_context is not None and n_tokens + budget > max_context:
            raise APIError(400, f"This model's maximum context length is {max_context} tokens; the prompt has {n_tokens} "
                                f"and up to {budget} more were asked for.", param="messages", code="context_length_exceeded")

    def stops(req: _Sampling) -> list[str]:
        s = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if any(not x for x in s):
            raise APIError(400, "stop strings must not be empty", param="stop")
        check_limit(len(s), limits.max_stop, "stop", "stop strings")
        return s

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "safetrigger"}]}

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(req: CompletionRequest):
        check_sampling(req)
        if req.stream:
            raise APIError(400, "stream is not supported on /v1/completions (use /v1/chat/completions)", param="stream")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts or any(not p for p in prompts):
            raise APIError(400, "prompt must be a non-empty string or a list of them", param="prompt")
        check_limit(len(prompts), limits.max_prompts, "prompt", "prompts per request")
        params = SamplingParams(
            max_new_tokens=req.max_tokens or gen.max_new_tokens,
            temperature=gen.temperature if req.temperature is None else req.temperature,
            top_p=gen.top_p if req.top_p is None else req.top_p,
            stop=stops(req),
            repetition_penalty=req.repetition_penalty or gen.repetition_penalty,
            penalty_spares_format=gen.penalty_spares_format,
            penalty_spares_leading=gen.penalty_spares_leading,
            seed=gen.seed if req.seed is None else req.seed,
        )
        lengths = [len(loaded.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        for k in lengths:
            check_length(k, params.max_new_tokens)
        def job(should_stop):
            stop_kw = {"should_stop": should_stop} if backend.streams_tokens else {}
            return backend.complete(prompts, params, req.n, **stop_kw)

        outs = await engine.run(job)
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
    async def chat_completions(req: ChatRequest):
        check_sampling(req)
        check_limit(len(req.messages), limits.max_messages, "messages", "messages")
        check_limit(req.max_completion_tokens, limits.max_tokens, "max_completion_tokens", "tokens")
        check_limit(req.thinking_budget, limits.max_tokens, "thinking_budget", "tokens")
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
        prompt = render_messages(loaded.tokenizer, messages, system, loaded.reasoning)
        n_prompt = len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        check_length(n_prompt, g.max_new_tokens + (g.thinking_budget + 8 if loaded.reasoning != "off" else 0))
        cid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        if req.stream and req.n == 1:
            return StreamingResponse(_stream(engine, loaded, backend, g, prompt, cid, now, model_name, n_prompt, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        replies = await engine.run(lambda stop: respond(loaded, backend, g, messages, system, req.n, should_stop=stop))
        used = sum(r.think_tokens + r.answer_tokens for r in replies)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used}
        fields = [_fields(r) for r in replies]
        finish = ["length" if r.answer_finish == "length" else "stop" for r in replies]
        if not req.stream:
            choices = [{"index": i, "message": {"role": "assistant", **f}, "finish_reason": fin, "logprobs": None}
                       for i, (f, fin) in enumerate(zip(fields, finish))]
            return {"id": cid, "object": "chat.completion", "created": now, "model": model_name, "choices": choices, "usage": usage}
        chunks = list(_chunks(cid, now, model_name, fields, finish, usage if include_usage else None))
        return StreamingResponse(iter(chunks), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


_LIMIT_FIELD = {"n": "max_n", "max_tokens": "max_tokens", "max_completion_tokens": "max_tokens", "thinking_budget": "max_tokens",
                "messages": "max_messages", "prompt": "max_prompts", "stop": "max_stop"}
_FIELDS = ("reasoning_content", "safe_content", "content")


def _fields(r) -> dict:
    return {"content": r.answer, "reasoning_content": r.think, "safe_content": r.safe}


def _event(cid: str, created: int, model: str, choices: list[dict], **extra) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


class _Splitter:
    """Turns the engine's raw text (reasoning, then answer) into deltas of the reply's three
    fields. Each field is re-derived from the text so far with the same parser as the finished
    reply, and only a stable prefix of it is sent (a trailing tag fragment, whitespace or stop
    string is held back), so the streamed pieces add up to the non-streamed reply."""

    HOLD = 8  # a "<" this close to the end may start a tag (</think>, <safe>, </safe>)

    def __init__(self, reasoning: str, stops: list[str]):
        self.reasoning, self.stops = reasoning, stops
        self.raw = {"think": "", "answer": ""}
        self.sent = dict.fromkeys(_FIELDS, "")

    def _partial(self) -> dict:
        from safetrigger.response_format import parse, render

        # The engine may show a stop string before it stops; the finished text has it cut.
        think = _cut(self.raw["think"], ["</think>"])
        answer = _cut(self.raw["answer"], self.stops)
        if self.reasoning == "off":
            p = parse(answer.strip())
        else:
            p = parse(render(think.strip(), "") + answer.strip())
        return {"reasoning_content": p.think if self.reasoning != "off" else None, "safe_content": p.safe, "content": p.answer}

    def feed(self, phase: str, text: str) -> list[tuple[str, str]]:
        self.raw[phase] += text
        part = self._partial()
        out = []
        for key in _FIELDS:
            value = part[key]
            if value is None:
                continue
            if key == "content" and phase == "think":
                continue
            # The reasoning is final once the answer phase runs; other tails may still change.
            out += self._send(key, value if (key == "reasoning_content" and phase == "answer") else self._stable(value))
        return out

    def _stable(self, value: str) -> str:
        """``value`` without what more text may still change: trailing whitespace (stripped
        from the finished fields), a possible tag start ("<saf") or a stop string's start."""
        value = value.rstrip()
        lt = value.rfind("<", max(0, len(value) - self.HOLD))
        if lt != -1:
            value = value[:lt].rstrip()
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(value)), 0, -1):
                if value.endswith(stop[:k]):
                    return value[:-k].rstrip()
        return value

    def _send(self, key: str, value: str) -> list[tuple[str, str]]:
        done = self.sent[key]
        if len(value) > len(done) and value.startswith(done):
            self.sent[key] = value
            return [(key, value[len(done):])]
        return []

    def finish(self, final: dict) -> list[tuple[str, str]]:
        """The rest of each field of the finished reply (everything, if the stream diverged)."""
        out = []
        for key in _FIELDS:
            if final[key] is not None:
                out += self._send(key, final[key])
        return out


def _cut(text: str, stops: list[str]) -> str:
    for s in stops:
        text = text.split(s, 1)[0]
    return text


def _stream(engine: Engine, loaded, backend, gen, prompt: str, cid: str, created: int, model: str, n_prompt: int,
            include_usage: bool):
    """SSE events of one reply as the engine writes it: role, then reasoning / <safe> / answer
    deltas, finish reason, usage (if asked), [DONE]. The job is queued here, before any byte
    is sent, so a full queue is still a plain 429; errors after that are an OpenAI-style
    ``error`` event (the status line is already out)."""
    from safetrigger.generation.reasoning import stream_response

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    split = _Splitter(loaded.reasoning, list(gen.stop))

    def job(should_stop):
        return stream_response(backend, prompt, gen, loaded.reasoning,
                               lambda phase, text: loop.call_soon_threadsafe(queue.put_nowait, (phase, text)), should_stop)

    stop = threading.Event()
    future = engine.submit(job, stop)
    done = asyncio.wrap_future(future)
    done.add_done_callback(lambda _: queue.put_nowait(None))
    return _events(engine, future, done, stop, queue, split, cid, created, model, n_prompt, include_usage)


async def _events(engine, future, done, stop, queue, split, cid, created, model, n_prompt, include_usage):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + engine.timeout
    yield _event(cid, created, model, [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                e = engine.timed_out(future, stop)
                yield f"data: {json.dumps(_error_body(e.message, e.type, code=e.code))}\n\n"
                return
            if item is None:
                break
            for key, delta in split.feed(*item):
                yield _event(cid, created, model, [{"index": 0, "delta": {key: delta}, "finish_reason": None}])
        try:
            r = future.result()
        except CancelledError:
            return
        except Exception as e:  # noqa: BLE001  (reported in the stream; the server stays up)
            log.exception("streamed request failed")
            yield f"data: {json.dumps(_error_body(f'internal error: {type(e).__name__}', 'server_error'))}\n\n"
            return
        for key, delta in split.finish(_fields(r)):
            yield _event(cid, created, model, [{"index": 0, "delta": {key: delta}, "finish_reason": None}])
        finish = "length" if r.answer_finish == "length" else "stop"
        yield _event(cid, created, model, [{"index": 0, "delta": {}, "finish_reason": finish}])
        if include_usage:
            used = r.think_tokens + r.answer_tokens
            yield _event(cid, created, model, [], usage={"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used})
        yield "data: [DONE]\n\n"
    finally:
        if not future.done() and not future.cancel():  # client gone mid-stream: stop generating
            stop.set()


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
    """SSE events of finished replies (n > 1): role, reasoning, <safe> analysis, answer, finish, [DONE]."""
    for i, f in enumerate(fields):
        yield _event(cid, created, model, [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for key in _FIELDS:
            if f[key] is not None:
                yield _event(cid, created, model, [{"index": i, "delta": {key: f[key]}, "finish_reason": None}])
        yield _event(cid, created, model, [{"index": i, "delta": {}, "finish_reason": finish[i]}])
    if usage is not None:
        yield _event(cid, created, model, [], usage=usage)
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
    app = create_app(loaded, backend, gen, system_prompt(cfg.model, loaded.reasoning), name, api_key=api_key or None, limits=cfg.serve)
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
