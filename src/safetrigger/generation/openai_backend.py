"""Generation through an OpenAI-compatible server's ``/v1/completions`` endpoint.

The prompt text sent is the one the project rendered itself (its own chat templates, the
two-phase reasoning protocol of reasoning.py), so a server generates from byte-identical
prompts to local generation; the server's chat template is never used. Works with vLLM,
SGLang, TGI, llama.cpp, Ollama and ``safetrigger serve``.

Fidelity notes:

* Finish reasons: servers report 'stop' for both a stop string and end of turn. vLLM (and
  ``safetrigger serve``) say which in ``stop_reason`` (SGLang: ``matched_stop``); for servers
  that say nothing, 'stop' with stop strings requested counts as the stop string.
* ``repetition_penalty`` (when not 1.0) and ``add_special_tokens: false`` are vLLM extensions
  that other servers ignore; the latter keeps the server from adding a second BOS to a prompt
  whose template already has one.
* Token counts come from ``usage`` (one request per prompt). With several samples per prompt
  servers only give a total, so per-sample counts are the budget for truncated samples and a
  share of the rest in proportion to text length (exact when the server returns ``token_ids``).
* Reproducibility: every request carries ``seed``; whether equal seeds give equal samples
  is up to the server.
"""

from __future__ import annotations

from safetrigger.generation.base import Completion, GenerationBackend, SamplingParams


class OpenAIBackend(GenerationBackend):
    name = "openai"

    def __init__(self, client, progress: bool = False, desc: str = "generate"):
        self.client = client
        self.desc = desc  # progress-bar label: the stage that generates
        self.progress = progress
        self.stats = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}

    def identity(self) -> dict:
        return {"backend": self.name, "api_base": self.client.base_url, "model": self.client.resolve_model()}

    def complete(self, prompts: list[str], params: SamplingParams, num_samples: int = 1) -> list[list[Completion]]:
        from safetrigger.progress import progress_bar

        sampling = {
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop) or None,
            "seed": params.seed,
            "n": num_samples,
            "add_special_tokens": False,
        }
        if params.repetition_penalty != 1.0:
            sampling["repetition_penalty"] = params.repetition_penalty
        with progress_bar(total=len(prompts), desc=self.desc, unit="req", disable=not self.progress) as bar:
            bodies = self.client.complete(prompts, on_done=bar.update, **sampling)
        return [self._completions(body, params, num_samples) for body in bodies]

    def _completions(self, body: dict, params: SamplingParams, n: int) -> list[Completion]:
        from safetrigger.errors import ModelError

        choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise ModelError(f"server returned {len(choices)} choice(s) for a request with n={n}")
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        counts = _split_tokens(choices, int(usage.get("completion_tokens") or 0), params.max_new_tokens)
        self.stats["requests"] += 1
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += sum(counts)
        return [_completion(c, params, prompt_tokens, k) for c, k in zip(choices, counts)]


def _completion(choice: dict, params: SamplingParams, prompt_tokens: int, tokens: int) -> Completion:
    text = choice.get("text") or ""
    reason = choice.get("finish_reason")
    if reason == "length":
        return Completion(text, "length", prompt_tokens, tokens)
    told = "stop_reason" in choice or "matched_stop" in choice
    matched = choice.get("stop_reason", choice.get("matched_stop"))
    if isinstance(matched, str) and matched in params.stop:
        return Completion(text, "stop", prompt_tokens, tokens, matched)
    if reason == "stop" and not told and params.stop:
        # The server does not say which stop fired; with stop strings requested, assume one did.
        return Completion(text, "stop", prompt_tokens, tokens, params.stop[0] if len(params.stop) == 1 else None)
    return Completion(text, "eos", prompt_tokens, tokens)


def _split_tokens(choices: list[dict], total: int, budget: int) -> list[int]:
    """Completion tokens per choice: exact from ``token_ids`` or for one choice, else estimated."""
    if all(isinstance(c.get("token_ids"), list) for c in choices):
        return [len(c["token_ids"]) for c in choices]
    if len(choices) == 1:
        return [total]
    counts = [budget if c.get("finish_reason") == "length" else 0 for c in choices]
    rest = [i for i, c in enumerate(choices) if c.get("finish_reason") != "length"]
    left = max(0, total - sum(counts))
    chars = [len(choices[i].get("text") or "") for i in rest]
    for i, ch in zip(rest, chars):
        counts[i] = round(left * ch / sum(chars)) if sum(chars) else left // len(rest)
    return counts
