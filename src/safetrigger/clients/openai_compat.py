"""A small synchronous client for OpenAI-compatible servers (vLLM, SGLang, TGI, llama.cpp,
Ollama, ``safetrigger serve``).

What it adds over a bare HTTP call, because pipeline stages send thousands of requests:

* at most ``max_concurrency`` requests in flight (a thread pool), results in input order;
* retries with exponential backoff and jitter on 408/429/5xx, timeouts and connection errors
  (``Retry-After`` is honoured); any other 4xx fails at once with the server's message;
* an optional JSONL request log, one line per attempt (endpoint, status, attempt, latency,
  token usage). Prompts and the API key are never logged or put in error messages.

HTTP goes through ``httpx2`` (the maintained continuation of httpx, already required by
openai and huggingface_hub), so this adds no dependency.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import httpx2 as httpx

from safetrigger import timestamps
from safetrigger.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429})  # plus every 5xx


def _retryable(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500


def _error_message(r: httpx.Response) -> str:
    """The server's own error text: OpenAI ``{"error": {"message"}}``, FastAPI ``{"detail"}``, or the body."""
    try:
        body = r.json()
    except ValueError:
        return r.text.strip()[:500] or r.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if "detail" in body:
            return str(body["detail"])[:500]
        if "message" in body:
            return str(body["message"])[:500]
    return json.dumps(body)[:500]


class OpenAIClient:
    """Sync client of one model on one OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_concurrency: int = 8,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        request_log: str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_concurrency < 1:
            raise ConfigError(f"generation.max_concurrency must be at least 1, got {max_concurrency}")
        if max_retries < 0:
            raise ConfigError(f"generation.max_retries must be 0 or more, got {max_retries}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"generation.api_base must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model or None
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.request_log = Path(request_log) if request_log else None
        self._sleep = sleep
        self._log_lock = threading.Lock()
        self._model_lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    @classmethod
    def from_config(cls, gen, **kwargs) -> OpenAIClient:
        """A client for ``GenerationConfig`` ``gen``; the key comes from ``$<gen.api_key_env>``."""
        key = os.environ.get(gen.api_key_env) if gen.api_key_env else None
        return cls(
            gen.api_base, model=gen.api_model, api_key=key or None, timeout=gen.request_timeout,
            max_concurrency=gen.max_concurrency, max_retries=gen.max_retries, request_log=gen.request_log, **kwargs,
        )

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ endpoints

    def models(self) -> list[str]:
        """Ids of the models the server offers (GET /models)."""
        body = self._request("GET", "/models")
        return [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m]

    def resolve_model(self) -> str:
        """The model name to send: the configured one, else the server's first."""
        with self._model_lock:
            if self.model is None:
                ids = self.models()
                if not ids:
                    raise ModelError(f"{self.base_url}/models lists no model; set generation.api_model")
                self.model = ids[0]
                log.info("server %s serves %s", self.base_url, self.model)
            return self.model

    def complete(self, prompts: list[str], on_done: Callable[[int], None] | None = None, **sampling) -> list[dict]:
        """POST /completions once per raw prompt text; the response bodies in input order.
        ``sampling`` fields (max_tokens, temperature, stop, n, …) go into every request; None ones are left out."""
        model = self.resolve_model()
        extra = {k: v for k, v in sampling.items() if v is not None}
        return self._map("/completions", [{"model": model, "prompt": p, **extra} for p in prompts], on_done)

    def chat(self, messages_list: list[list[dict]], on_done: Callable[[int], None] | None = None, **sampling) -> list[dict]:
        """POST /chat/completions once per conversation; the response bodies in input order."""
        model = self.resolve_model()
        extra = {k: v for k, v in sampling.items() if v is not None}
        return self._map("/chat/completions", [{"model": model, "messages": m, **extra} for m in messages_list], on_done)

    # ------------------------------------------------------------------ machinery

    def _map(self, endpoint: str, payloads: list[dict], on_done: Callable[[int], None] | None) -> list[dict]:
        if not payloads:
            return []
        out: list[dict | None] = [None] * len(payloads)
        ex = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(payloads)), thread_name_prefix="openai")
        try:
            futures = [ex.submit(self._request, "POST", endpoint, p) for p in payloads]
            for i, f in enumerate(futures):
                out[i] = f.result()
                if on_done is not None:
                    on_done(1)
        except BaseException:
            # First failure (or Ctrl-C): drop queued requests, don't wait for those in flight.
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown()
        return out  # type: ignore[return-value]

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        # Full exponential step with ±50 % jitter, so concurrent workers do not retry in lockstep.
        return min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random())

    def _request(self, method: str, endpoint: str, payload: dict | None = None) -> dict:
        url = f"{self.base_url}{endpoint}"
        last = ""
        for attempt in range(self.max_retries + 1):
            t0 = time.perf_counter()
            retry_after = None
            try:
                r = self._http.request(method, endpoint, json=payload)
            except httpx.TimeoutException:
                status, last = None, "timed out"
            except httpx.TransportError as e:
                status, last = None, f"connection error ({type(e).__name__}: {e})"
            else:
                status = r.status_code
                if status < 400:
                    try:
                        body = r.json()
                    except ValueError:
                        self._log(endpoint, status, attempt, t0, error="invalid JSON body")
                        raise ModelError(f"{url} answered HTTP {status} with a body that is not JSON") from None
                    self._log(endpoint, status, attempt, t0, usage=body.get("usage") if isinstance(body, dict) else None)
                    return body
                last = f"HTTP {status}: {_error_message(r)}"
                if not _retryable(status):
                    self._log(endpoint, status, attempt, t0, error=last)
                    hint = " (set the key's environment variable, generation.api_key_env)" if status in (401, 403) else ""
                    raise ModelError(f"{url} refused the request, {last}{hint}")
                retry_after = r.headers.get("retry-after")
            self._log(endpoint, status, attempt, t0, error=last)
            if attempt == self.max_retries:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("%s: %s; retry %d/%d in %.1fs", url, last, attempt + 1, self.max_retries, delay)
            self._sleep(delay)
        raise ModelError(f"{url} failed after {self.max_retries + 1} attempt(s); last error: {last} (is the server up? see generation.max_retries)")

    def _log(self, endpoint: str, status: int | None, attempt: int, t0: float, usage: Any = None, error: str | None = None) -> None:
        if self.request_log is None:
            return
        line = {
            "time": timestamps.now(),
            "endpoint": endpoint,
            "model": self.model,
            "status": status,
            "attempt": attempt,
            "latency_s": round(time.perf_counter() - t0, 4),
            "usage": usage,
        }
        if error:
            line["error"] = error
        with self._log_lock:
            self.request_log.parent.mkdir(parents=True, exist_ok=True)
            with self.request_log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
