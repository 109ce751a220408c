"""The OpenAI-compatible client (retries, backoff, ordering, request log) and the openai
generation backend (payload, finish reasons, token counts), against httpx MockTransport."""

import json
import threading
import time

import httpx2 as httpx
import pytest

from safetrigger.clients.openai_compat import OpenAIClient
from safetrigger.config import GenerationConfig
from safetrigger.errors import ModelError
from safetrigger.generation import SamplingParams, make_backend, needs_weights, output_settings
from safetrigger.generation.openai_backend import OpenAIBackend

BASE = "http://server.test/v1"
KEY = "sk-very-secret-key-123"


def ok(body_extra=None, text="hi"):
    body = {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    body.update(body_extra or {})
    return httpx.Response(200, json=body)


def client(handler, **kw):
    delays = kw.pop("delays", [])
    return OpenAIClient(BASE, model="m", transport=httpx.MockTransport(handler), sleep=delays.append, **kw)


def test_retries_429_and_503_with_backoff_then_succeeds():
    statuses = iter([429, 503, 200])
    calls, delays = [], []

    def handler(request):
        calls.append(request.url.path)
        s = next(statuses)
        return ok() if s == 200 else httpx.Response(s, json={"error": {"message": f"busy {s}"}})

    c = client(handler, max_retries=3, backoff=0.5, delays=delays)
    (body,) = c.complete(["p"], max_tokens=4)
    assert body["choices"][0]["text"] == "hi"
    assert calls == ["/v1/completions"] * 3
    # Exponential steps with ±50 % jitter: attempt k waits backoff * 2**k * [0.5, 1.5).
    assert len(delays) == 2
    assert 0.25 <= delays[0] < 0.75 and 0.5 <= delays[1] < 1.5


def test_retry_after_header_is_honoured_and_timeouts_and_connection_errors_retry():
    events = iter(["timeout", "connect", "retry-after", "ok"])
    delays = []

    def handler(request):
        e = next(events)
        if e == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if e == "connect":
            raise httpx.ConnectError("refused", request=request)
        if e == "retry-after":
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}})
        return ok()

    c = client(handler, max_retries=5, backoff=0.01, delays=delays)
    assert c.complete(["p"])[0]["usage"]["completion_tokens"] == 2
    assert len(delays) == 3 and delays[2] == 2.0


def test_gives_up_after_max_retries_with_clear_error():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(503, json={"error": {"message": "engine overloaded"}})

    c = client(handler, max_retries=2)
    with pytest.raises(ModelError, match=r"failed after 3 attempt\(s\).*HTTP 503: engine overloaded"):
        c.complete(["p"])
    assert len(calls) == 3


def test_client_error_is_not_retried_and_carries_the_server_message():
    calls, delays = [], []

    def handler(request):
        calls.append(1)
        return httpx.Response(400, json={"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}})

    c = client(handler, max_retries=5, delays=delays)
    with pytest.raises(ModelError, match="HTTP 400: max_tokens is too large"):
        c.chat([[{"role": "user", "content": "x"}]])
    assert len(calls) == 1 and delays == []


def test_results_keep_input_order_under_concurrency():
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def handler(request):
        i = int(json.loads(request.content)["prompt"])
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.002 * (12 - i))  # later prompts finish first
        with lock:
            state["now"] -= 1
        return ok(text=f"answer {i}")

    c = client(handler, max_concurrency=4)
    done = []
    bodies = c.complete([str(i) for i in range(12)], on_done=done.append)
    assert [b["choices"][0]["text"] for b in bodies] == [f"answer {i}" for i in range(12)]
    assert 1 < state["peak"] <= 4
    assert sum(done) == 12


def test_request_log_has_one_line_per_attempt_and_never_the_key(tmp_path):
    statuses = iter([500, 200, 200])
    seen_auth = []

    def handler(request):
        seen_auth.append(request.headers.get("authorization"))
        s = next(statuses)
        return ok() if s == 200 else httpx.Response(s, text="oops")

    log = tmp_path / "logs" / "requests.jsonl"
    c = client(handler, api_key=KEY, request_log=log, max_retries=2)
    c.complete(["a"])
    c.chat([[{"role": "user", "content": "b"}]])
    assert seen_auth == [f"Bearer {KEY}"] * 3
    text = log.read_text()
    assert KEY not in text and KEY not in repr(c)
    lines = [json.loads(x) for x in text.splitlines()]
    assert [(x["endpoint"], x["status"], x["attempt"]) for x in lines] == [
        ("/completions", 500, 0), ("/completions", 200, 1), ("/chat/completions", 200, 0)]
    assert all(x["latency_s"] >= 0 for x in lines)
    assert lines[0]["error"] == "HTTP 500: oops" and lines[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}


def test_unauthorized_error_names_the_env_var_but_not_the_key():
    c = client(lambda r: httpx.Response(401, json={"error": {"message": "bad key"}}), api_key=KEY)
    with pytest.raises(ModelError) as e:
        c.complete(["p"])
    assert "bad key" in str(e.value) and "api_key_env" in str(e.value) and KEY not in str(e.value)


def test_model_defaults_to_the_first_one_the_server_lists():
    sent = []

    def handler(request):
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "served-a"}, {"id": "served-b"}]})
        sent.append(json.loads(request.content)["model"])
        return ok()

    c = OpenAIClient(BASE, transport=httpx.MockTransport(handler))
    c.complete(["x", "y"])
    assert sent == ["served-a", "served-a"]


def test_from_config_reads_the_key_from_the_named_env_var(monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", KEY)
    gen = GenerationConfig(backend="openai", api_base=BASE, api_model="m", api_key_env="MY_TEST_KEY", max_retries=0)
    seen = []
    c = OpenAIClient.from_config(gen, transport=httpx.MockTransport(lambda r: seen.append(r.headers["authorization"]) or ok()))
    c.complete(["x"])
    assert seen == [f"Bearer {KEY}"]
    assert isinstance(make_backend(None, gen), OpenAIBackend) and not needs_weights(gen)


def test_backend_payload_finish_reasons_and_token_counts():
    sent = []
    replies = iter([
        {"choices": [{"index": 0, "text": "r", "finish_reason": "stop", "stop_reason": "</think>"}], "usage": {"prompt_tokens": 7, "completion_tokens": 4}},
        {"choices": [{"index": 0, "text": "a", "finish_reason": "stop", "stop_reason": None}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
        {"choices": [{"index": 0, "text": "b", "finish_reason": "length", "stop_reason": None}], "usage": {"prompt_tokens": 6, "completion_tokens": 9}},
        # A server that does not say which stop fired (llama.cpp, TGI, …).
        {"choices": [{"index": 0, "text": "c", "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    ])

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=next(replies))

    be = OpenAIBackend(client(handler, max_concurrency=1))
    params = SamplingParams(max_new_tokens=9, temperature=0.7, top_p=0.9, stop=["</think>"], seed=3)
    out = be.complete(["p0", "p1", "p2", "p3"], params)
    assert [(c.finish_reason, c.stop_string) for (c,) in out] == [("stop", "</think>"), ("eos", None), ("length", None), ("stop", "</think>")]
    assert [(c.prompt_tokens, c.completion_tokens) for (c,) in out] == [(7, 4), (5, 2), (6, 9), (1, 1)]
    p = sent[0]
    assert {k: p[k] for k in ("model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "add_special_tokens")} == {
        "model": "m", "prompt": "p0", "max_tokens": 9, "temperature": 0.7, "top_p": 0.9, "stop": ["</think>"], "seed": 3, "n": 1,
        "add_special_tokens": False}
    assert "repetition_penalty" not in p


def test_backend_samples_and_repetition_penalty():
    sent = []

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={
            "choices": [{"index": 1, "text": "xxxxxxxx", "finish_reason": "stop"}, {"index": 0, "text": "zz", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 14}})

    be = OpenAIBackend(client(handler))
    ((first, second),) = be.complete(["p"], SamplingParams(max_new_tokens=10, repetition_penalty=1.3), num_samples=2)
    assert sent[0]["n"] == 2 and sent[0]["repetition_penalty"] == 1.3 and "stop" not in sent[0]
    # Choices come back in index order; the truncated one used the whole budget, the other the rest.
    assert (first.text, first.finish_reason, first.completion_tokens) == ("zz", "length", 10)
    assert (second.text, second.finish_reason, second.completion_tokens) == ("xxxxxxxx", "eos", 4)
    assert be.stats == {"prompt_tokens": 4, "completion_tokens": 14, "requests": 1}


def test_backend_rejects_a_reply_with_the_wrong_number_of_choices():
    be = OpenAIBackend(client(lambda r: ok()))
    with pytest.raises(ModelError, match="1 choice"):
        be.complete(["p"], SamplingParams(), num_samples=2)


def test_server_fields_only_fingerprint_a_server_backend():
    local = output_settings(GenerationConfig())
    assert "api_base" not in local and "max_concurrency" not in local and "temperature" in local
    remote = output_settings(GenerationConfig(backend="openai", api_model="x"))
    assert remote["api_model"] == "x" and "request_log" not in remote and "api_key_env" not in remote
