"""`safetrigger serve` under load and garbage: request limits (4xx), a bounded queue (429),
per-request timeouts (503 queued / 504 generating, engine freed), token-by-token streaming,
loopback by default, a constant-time key check that never reaches a log, and a fuzz of
random and malformed requests (no 5xx, server alive)."""

import json
import logging
import threading
import time

import httpx2 as httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safetrigger.config import ServeConfig, load_config
from safetrigger.generation import Completion, GenerationBackend
from safetrigger.serve import bound_port, create_app, make_server

NAME = "tiny"
KEY = "sk-test-8c1f0d5e9a"


class Stub(GenerationBackend):
    """Scripted engine: streams a fixed reply in pieces, honours n and should_stop; ``gate``
    (when set) holds every call until released, ``stall`` makes a call run until stopped."""

    streams_tokens = True

    def __init__(self):
        self.gate: threading.Event | None = None
        self.stall = False
        self.stopped = 0
        self.first_piece_sent = threading.Event()
        self.client_saw_first_piece = threading.Event()
        self.wait_for_client = False

    def complete(self, prompts, params, num_samples=1, *, on_text=None, should_stop=None):
        from safetrigger.generation.base import GenerationCancelled

        if self.gate is not None:
            self.gate.wait(30)
        while self.stall:
            if should_stop is not None and should_stop():
                self.stopped += 1
                raise GenerationCancelled()
            time.sleep(0.01)
        think = "</think>" in params.stop
        text = "Let me check the request step by step." if think else "\n\n<safe>\nThe request is benign.\n</safe>\n\nHere you go: 4."
        if on_text is not None:
            for i, word in enumerate(text.split(" ")):
                on_text(word if i == 0 else " " + word)
                if self.wait_for_client and i == 0 and think:
                    self.first_piece_sent.set()
                    self.client_saw_first_piece.wait(10)  # the client must see this before we go on
        c = Completion(text, "stop" if think else "eos", 3, 9, "</think>" if think else None)
        return [[c] * num_samples for _ in prompts]


def _start(app):
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and t.is_alive(), "server did not start"
        time.sleep(0.02)
    return srv, t, f"http://127.0.0.1:{bound_port(srv)}/v1"


@pytest.fixture(scope="module")
def tokenizer_only(tiny_model_dir):
    from safetrigger.models import load_model

    cfg = load_config(None, ["--model.name_or_path", str(tiny_model_dir), "--model.template", "chatml"])
    return cfg, load_model(cfg.model, weights=False)


@pytest.fixture
def stub_server(tokenizer_only):
    """A server on the stub engine with small limits; yields (url, stub)."""
    cfg, loaded = tokenizer_only
    stub = Stub()
    limits = ServeConfig(max_body_bytes=4000, max_tokens=64, max_messages=4, max_prompts=2, max_n=2, max_stop=2,
                         max_queue=1, request_timeout=1.0)
    app = create_app(loaded, stub, cfg.generation, None, NAME, api_key=KEY, limits=limits)
    stub.engine = app.state.engine
    srv, t, url = _start(app)
    yield url, stub
    stub.stall, stub.gate = False, None
    srv.should_exit = True
    t.join(10)


def _post(url, path, body, key=KEY, **kw):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(url + path, content=body if isinstance(body, (str, bytes)) else json.dumps(body), headers=headers, timeout=30, **kw)


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("path, body, status, param, text", [
    ("/chat/completions", {"messages": USER, "max_tokens": 65}, 400, "max_tokens", "max_tokens is 65; this server allows at most 64 tokens (serve.max_tokens)"),
    ("/chat/completions", {"messages": USER, "max_completion_tokens": 999}, 400, "max_completion_tokens", "at most 64 tokens"),
    ("/chat/completions", {"messages": USER, "thinking_budget": 1000}, 400, "thinking_budget", "at most 64 tokens"),
    ("/chat/completions", {"messages": USER * 5}, 400, "messages", "messages is 5; this server allows at most 4 messages (serve.max_messages)"),
    ("/chat/completions", {"messages": USER, "n": 3}, 400, "n", "n is 3; this server allows at most 2 choices per request (serve.max_n)"),
    ("/chat/completions", {"messages": USER, "stop": ["a", "b", "c"]}, 400, "stop", "at most 2 stop strings (serve.max_stop)"),
    ("/completions", {"prompt": ["a", "b", "c"]}, 400, "prompt", "prompt is 3; this server allows at most 2 prompts per request (serve.max_prompts)"),
    ("/chat/completions", {"messages": USER, "seed": 2**70}, 400, "seed", "seed: "),
    ("/chat/completions", {"messages": USER, "temperature": float("nan")}, 400, "temperature", "temperature: "),
    ("/chat/completions", {"messages": [{"role": "user", "content": "x" * 5000}]}, 413, None, "request body is larger than 4000 bytes (serve.max_body_bytes)"),
])
def test_limits_give_openai_style_4xx(stub_server, path, body, status, param, text):
    url, _ = stub_server
    r = _post(url, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and text in err["message"]


def test_chunked_body_over_the_limit_is_refused_without_length(stub_server):
    url, _ = stub_server
    r = httpx.post(url + "/chat/completions", content=iter([b'{"messages": [', b" " * 5000, b"]}"]),
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def _wait_pending(stub, n):
    deadline = time.time() + 20
    while stub.engine.pending < n:
        assert time.time() < deadline, f"never reached {n} requests in flight"
        time.sleep(0.01)


def test_queue_is_bounded_with_429_and_drains(stub_server):
    url, stub = stub_server
    stub.gate = threading.Event()  # the engine holds every call until released
    # The fixture's 1 s timeout is for the timeout test; on a loaded 2-core host the gated call
    # outlived it (504) before the third request was even sent, so this test lifts it.
    stub.engine.timeout = 30.0
    results = {}

    def call(name):
        results[name] = _post(url, "/chat/completions", {"messages": USER})

    threads = [threading.Thread(target=call, args=(name,)) for name in ("generating", "queued")]
    for i, t in enumerate(threads, 1):
        t.start()
        _wait_pending(stub, i)
    busy = _post(url, "/chat/completions", {"messages": USER})  # 1 generating + max_queue 1 waiting: full
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "queue_full" and busy.json()["error"]["type"] == "rate_limit_error"
    stub.gate.set()
    for t in threads:
        t.join(30)
    assert results["generating"].status_code == 200 and results["queued"].status_code == 200
    assert stub.engine.pending == 0


def test_timeouts_stop_generation_and_free_the_engine(stub_server):
    url, stub = stub_server
    stub.stall = True  # a generation that never ends on its own
    out = {}
    threads = [threading.Thread(target=lambda k=k: out.update({k: _post(url, "/chat/completions", {"messages": USER})}))
               for k in ("generating", "queued")]
    for i, t in enumerate(threads, 1):
        t.start()
        _wait_pending(stub, i)
    for t in threads:
        t.join(30)
    assert out["generating"].status_code == 504 and out["generating"].json()["error"]["code"] == "timeout"
    # The queued one is dropped when its time runs out first, or stopped once it got the engine.
    assert out["queued"].status_code in (503, 504)
    assert out["queued"].json()["error"]["code"] in ("queue_timeout", "timeout")
    assert stub.stopped >= 1  # the engine was told to stop, and did
    stub.stall = False
    r = _post(url, "/chat/completions", {"messages": USER})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Here you go: 4."


def test_streaming_is_token_by_token_from_the_engine(stub_server):
    """The first reasoning piece reaches the client while the engine is still generating."""
    url, stub = stub_server
    stub.wait_for_client = True
    pieces = {"reasoning_content": [], "safe_content": [], "content": []}
    body = {"messages": USER, "stream": True}
    with httpx.stream("POST", url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            for key, value in (choices[0]["delta"] if choices else {}).items():
                if key in pieces and value:
                    pieces[key].append(value)
                    if key == "reasoning_content":
                        assert stub.first_piece_sent.is_set()
                        stub.client_saw_first_piece.set()  # the engine waits for this: a buffered reply would hang here
    assert len(pieces["reasoning_content"]) > 1
    assert "".join(pieces["reasoning_content"]) == "Let me check the request step by step."
    assert "".join(pieces["safe_content"]) == "The request is benign."
    assert "".join(pieces["content"]) == "Here you go: 4."


def test_key_is_compared_in_constant_time_and_never_logged(stub_server, monkeypatch):
    import hmac

    from safetrigger import serve as serve_mod

    url, _ = stub_server
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(serve_mod.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    grab = Grab(level=logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "safetrigger", "httpx")]
    old = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(grab)
        lg.setLevel(logging.DEBUG)
    try:
        bodies = [_post(url, "/chat/completions", {"messages": USER}, key=k).text for k in (KEY, KEY[:-1] + "x", None)]
        bodies.append(httpx.get(url + "/models", headers={"Authorization": f"Bearer {KEY}"}).text)
    finally:
        for lg, level in old:
            lg.removeHandler(grab)
            lg.setLevel(level)
    assert calls and all(b == KEY.encode() for _, b in calls)  # every check went through compare_digest
    assert records, "nothing was logged: the check below would be vacuous"
    assert not any(KEY in r or KEY[:-1] in r for r in records)
    assert not any(KEY in b for b in bodies)


def test_binds_loopback_unless_told(tiny_model_dir):
    import inspect

    from safetrigger import cli, serve as serve_mod

    assert inspect.signature(serve_mod.make_server).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_mod.serve).parameters["host"].default == "127.0.0.1"
    args = cli.build_parser().parse_args(["serve", "embedded"])
    assert args.host == "127.0.0.1"
    cfg = load_config(None, ["--model.name_or_path", str(tiny_model_dir), "--model.template", "chatml", "--generation.backend", "openai"])
    srv = make_server(cfg, port=0, log_level="warning")  # openai backend: tokenizer only, nothing contacted
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        deadline = time.time() + 30
        while not srv.started:
            assert time.time() < deadline
            time.sleep(0.02)
        assert srv.servers[0].sockets[0].getsockname()[0] == "127.0.0.1"
    finally:
        srv.should_exit = True
        t.join(10)


# ---------------------------------------------------------------------------- fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "", 5])},
    optional={"content": st.one_of(st.text(max_size=40), st.none(), _json,
                                   st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=10)}), max_size=3))},
)
_fields = {
    "model": st.one_of(st.just(NAME), st.text(max_size=10), _json),
    "messages": st.one_of(st.lists(_message, max_size=6), _json),
    "prompt": st.one_of(st.text(max_size=30), st.lists(st.text(max_size=10), max_size=4), _json),
    "max_tokens": st.one_of(st.integers(-5, 100), _json),
    "max_completion_tokens": st.one_of(st.integers(-5, 100), _json),
    "thinking_budget": st.one_of(st.integers(-5, 100), _json),
    "temperature": st.one_of(st.floats(-1, 3), _json),
    "top_p": st.one_of(st.floats(-1, 2), _json),
    "n": st.one_of(st.integers(-2, 4), _json),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=5), _json),
    "seed": st.one_of(st.integers(-2**65, 2**65), _json),
    "repetition_penalty": st.one_of(st.floats(-1, 20), _json),
    "stream": st.one_of(st.booleans(), _json),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), _json),
}
_body = st.one_of(
    st.fixed_dictionaries({}, optional=_fields).map(json.dumps),
    _json.map(json.dumps),
    st.binary(max_size=200),
    st.text(max_size=200),
)
_request = st.tuples(
    st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]),
    st.sampled_from(["/chat/completions", "/chat/completions", "/completions", "/models", "/nope", "/chat/completions/x"]),
    _body,
    st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]),
    st.sampled_from([KEY, KEY, KEY, "wrong", None]),
)


def test_fuzz_random_and_malformed_requests_never_5xx(stub_server):
    url, _ = stub_server
    seen = {"n": 0, "statuses": set()}
    with httpx.Client(timeout=30) as client:

        @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(_request)
        def one(req):
            method, path, body, ctype, key = req
            headers = {**({"Content-Type": ctype} if ctype else {}), **({"Authorization": f"Bearer {key}"} if key else {})}
            r = client.request(method, url + path, content=body if isinstance(body, bytes) else body.encode(), headers=headers)
            seen["n"] += 1
            seen["statuses"].add(r.status_code)
            assert r.status_code < 500, (req, r.status_code, r.text)
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}

        one()
        assert client.get(url + "/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200  # still alive
    assert seen["n"] >= 1000
    assert 200 in seen["statuses"] and {400, 401, 404} <= seen["statuses"]  # the fuzz reached every layer
