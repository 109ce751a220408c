"""`safetrigger serve`: driven by the official openai client, by raw HTTP (malformed requests,
API key), and by the project's own openai backend running the generate stage."""

import json
import threading
import time

import httpx2 as httpx
import openai
import pytest

from safetrigger.config import load_config
from safetrigger.generation import Completion, GenerationBackend
from safetrigger.runstore import RunStore
from safetrigger.serve import bound_port, create_app, make_server
from safetrigger.stages import STAGES

KEY = "test-key-123"
NAME = "tiny"
POOL = "{'general:train': 3, 'harmful:train': 3}"


def _model_args(model_dir):
    return ["--model.name_or_path", str(model_dir), "--model.template", "chatml", "--model.dtype", "float32",
            "--generation.thinking_budget", "6", "--generation.max_new_tokens", "5", "--generation.progress", "false"]


def _start(server):
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and t.is_alive(), "server did not start"
        time.sleep(0.02)
    return t, f"http://127.0.0.1:{bound_port(server)}/v1"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    """The tiny model served on a free loopback port, with an API key."""
    cfg = load_config(None, _model_args(tiny_model_dir))
    srv = make_server(cfg, port=0, api_key=KEY, served_name=NAME, log_level="warning")
    thread, url = _start(srv)
    yield url
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)


def _post(url, path, body, key=KEY):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(url + path, content=body if isinstance(body, str) else json.dumps(body), headers=headers, timeout=60)


def _fields(message):
    return message.content, message.reasoning_content, message.safe_content


def test_models_list(client):
    assert [m.id for m in client.models.list()] == [NAME]


def test_chat_completion_fields(client):
    r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "How do I bake bread?"}], n=2, seed=1, temperature=1.0)
    assert r.object == "chat.completion" and len(r.choices) == 2
    for c in r.choices:
        content, reasoning, safe = _fields(c.message)
        assert c.message.role == "assistant" and isinstance(content, str)
        assert isinstance(reasoning, str)  # the tiny ChatML model reasons (prompted): the <think> text, tags removed
        assert safe is None or isinstance(safe, str)
        assert "<think>" not in content and "</think>" not in reasoning
        assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 2 * (6 + 5)


def test_streaming_matches_non_streaming(client, server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "What is 2 + 2?"}]
    full = client.chat.completions.create(model=NAME, messages=messages, temperature=0)
    parts = {"content": "", "reasoning_content": "", "safe_content": None}
    finish = None
    for chunk in client.chat.completions.create(model=NAME, messages=messages, temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        if not chunk.choices:
            assert chunk.usage.total_tokens == full.usage.total_tokens
            continue
        d = chunk.choices[0].delta
        parts["content"] += d.content or ""
        parts["reasoning_content"] += getattr(d, "reasoning_content", None) or ""
        if getattr(d, "safe_content", None) is not None:
            parts["safe_content"] = (parts["safe_content"] or "") + d.safe_content
        finish = chunk.choices[0].finish_reason or finish
    # Greedy decoding: the streamed reply is the same reply.
    assert (parts["content"], parts["reasoning_content"], parts["safe_content"]) == _fields(full.choices[0].message)
    assert finish == full.choices[0].finish_reason
    raw = _post(server, "/chat/completions", {"model": NAME, "messages": messages, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_reply_is_split_into_reasoning_safe_and_answer(tiny_model_dir):
    """With a scripted backend the three fields must be exactly the parts of the reply."""
    from safetrigger.models import load_model

    class Scripted(GenerationBackend):
        def complete(self, prompts, params, num_samples=1):
            if "</think>" in params.stop:  # phase 1: the reasoning
                return [[Completion("I should check this request.", "stop", 3, 4, "</think>")] * num_samples for _ in prompts]
            return [[Completion("\n\n<safe>\nThe request is benign.\n</safe>\n\nHere you go.", "eos", 9, 7)] * num_samples for _ in prompts]

    cfg = load_config(None, _model_args(tiny_model_dir))
    loaded = load_model(cfg.model, weights=False)
    app = create_app(loaded, Scripted(), cfg.generation, None, NAME)
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread, url = _start(srv)
    try:
        c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        m = c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}]).choices[0].message
        assert _fields(m) == ("Here you go.", "I should check this request.", "The request is benign.")
        r = _post(url, "/completions", {"model": NAME, "prompt": "x", "stop": ["</think>"]}, key=None).json()
        assert r["choices"][0]["finish_reason"] == "stop" and r["choices"][0]["stop_reason"] == "</think>"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("body, status, param", [
    ("{not json", 400, None),
    ({"model": NAME}, 400, "messages"),
    ({"model": NAME, "messages": "hi"}, 400, "messages"),
    ({"model": NAME, "messages": []}, 400, "messages"),
    ({"model": NAME, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, "temperature"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2000}, 400, "messages"),  # over the context, under serve.max_tokens
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ([1, 2], 400, None),
])
def test_malformed_chat_requests_get_openai_style_4xx(server, body, status, param):
    r = _post(server, "/chat/completions", body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["param"] == param
    assert "Traceback" not in r.text


def test_malformed_completion_requests_and_unknown_routes(server):
    for body in ({"model": NAME, "prompt": 123}, {"model": NAME, "prompt": ""}, {"model": NAME, "prompt": "x", "stream": True}):
        r = _post(server, "/completions", body)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(server + "/nothing-here", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and "error" in r.json()


def test_api_key_is_enforced(server):
    for key in (None, "wrong-key"):
        r = _post(server, "/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "x"}]}, key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(server + "/models", headers={"Authorization": f"Bearer {key}"} if key else {}).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server, api_key="wrong-key", max_retries=0).models.list()


def test_generate_stage_through_the_server_matches_local_generation(server, tiny_model_dir, tmp_path, monkeypatch):
    """The project's openai backend drives the server; greedy rows equal local generation's."""
    monkeypatch.setenv("ST_TEST_SERVER_KEY", KEY)
    common = _model_args(tiny_model_dir) + ["--data.pool", POOL, "--data.max_query_chars", "300"]
    remote = load_config(None, common + [
        "--run_dir", str(tmp_path / "remote"), "--generation.backend", "openai", "--generation.api_base", server,
        "--generation.api_key_env", "ST_TEST_SERVER_KEY", "--generation.request_log", str(tmp_path / "requests.jsonl")])
    local = load_config(None, common + ["--run_dir", str(tmp_path / "local"), "--generation.batch_size", "1"])
    stats = STAGES["generate"](remote, RunStore(remote.run_dir))
    STAGES["generate"](local, RunStore(local.run_dir))
    rows = RunStore(remote.run_dir).stage("generate").rows()
    assert stats["rows"] == len(rows) == 6
    for r in rows:
        assert r["response"].startswith("<think>\n") and "</think>" in r["response"]
        assert isinstance(r["think"], str) and isinstance(r["answer"], str)
        assert r["think_tokens"] <= 6 and r["answer_tokens"] <= 5 and r["prompt_tokens"] > 0
    keys = ("id", "response", "think", "safe", "answer", "think_finish", "answer_finish", "prompt_tokens", "think_tokens", "answer_tokens")
    by_id = {r["id"]: r for r in RunStore(local.run_dir).stage("generate").rows()}
    assert [{k: r[k] for k in keys} for r in rows] == [{k: by_id[r["id"]][k] for k in keys} for r in rows]
    stage = RunStore(remote.run_dir).manifest()["stages"]["generate"]
    assert stage["backend"] == {"backend": "openai", "api_base": server, "model": NAME}
    assert stage["model"]["weights"] is False
    log = (tmp_path / "requests.jsonl").read_text()
    endpoints = [json.loads(x)["endpoint"] for x in log.splitlines()]
    assert KEY not in log and endpoints == ["/models"] + ["/completions"] * 2 * 6  # model lookup, then two phases per query


def test_cli_serve_wires_model_adapter_and_overrides(monkeypatch):
    import safetrigger.serve as serve_mod
    from safetrigger.cli import main

    seen = {}
    monkeypatch.setattr(serve_mod, "serve", lambda cfg, **kw: seen.update(cfg=cfg, **kw))
    assert main(["serve", "some/model", "--adapter", "ad", "--port", "8123", "--api-key", "k", "--model.template", "qwen3"]) == 0
    assert (seen["cfg"].model.name_or_path, seen["cfg"].model.adapter, seen["cfg"].model.template) == ("some/model", "ad", "qwen3")
    assert (seen["host"], seen["port"], seen["api_key"], seen["served_name"]) == ("127.0.0.1", 8123, "k", None)


@pytest.mark.parametrize("extra", [
    {"seed": 2**32 - 1, "temperature": 1.0},
    {"temperature": 2.0, "top_p": 1e-9},
    {"repetition_penalty": 10.0},
    {"stop": ["a", "e", "o", "</safe>"], "stream": True},
    {"max_tokens": 1, "thinking_budget": 1},
    {"n": 3, "stream": True, "temperature": 1.0},
])
def test_extreme_but_valid_requests_on_the_real_engine(server, extra):
    """Edge values the fuzz (on a stub engine) cannot reach: the tiny model serves them all."""
    r = _post(server, "/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "hi"}], **extra})
    assert r.status_code == 200, r.text
    if extra.get("stream"):
        events = [x[6:] for x in r.text.split("\n\n") if x.startswith("data: ")]
        assert events[-1] == "[DONE]" and all("error" not in json.loads(e) for e in events[:-1])
    else:
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
