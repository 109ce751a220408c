"""Generation: a backend interface (text in, completions out), the transformers and
OpenAI-compatible-server backends, and the two-phase reasoning protocol with a thinking budget."""

from safetrigger.generation.base import Completion, GenerationBackend, SamplingParams
from safetrigger.generation.reasoning import Response, build_prompts, generate_responses

__all__ = ["Completion", "GenerationBackend", "SamplingParams", "Response", "build_prompts", "generate_responses", "make_backend", "needs_weights", "output_settings", "release_engines"]


def make_backend(loaded, gen, desc: str = "generate", alongside: bool = False) -> GenerationBackend:
    """The configured backend for a loaded model (``gen.backend``); ``desc`` labels its progress bar.
    ``alongside``: a second model used in the same stage (a judge), whose vLLM engine must not
    replace the stage's generation engine."""
    from safetrigger.chat_templates import FAMILIES
    from safetrigger.errors import ConfigError

    check_generation(gen)
    if gen.backend == "transformers":
        from safetrigger.generation.transformers_backend import TransformersBackend

        return TransformersBackend(
            loaded.model, loaded.tokenizer, batch_size=gen.batch_size, progress=gen.progress,
            end_tokens=[FAMILIES[loaded.family].end_of_turn], desc=desc,
        )
    if gen.backend == "vllm":
        try:
            from safetrigger.generation.vllm_backend import VLLMBackend
        except ImportError as e:  # a broken install (e.g. torchvision built for another torch)
            raise ConfigError(f"generation.backend vllm: vLLM does not import here ({e})") from None

        return VLLMBackend(loaded, gen, end_tokens=[FAMILIES[loaded.family].end_of_turn], progress=gen.progress, desc=desc,
                           alongside=alongside)
    if gen.backend == "openai":
        from safetrigger.clients.openai_compat import OpenAIClient
        from safetrigger.generation.openai_backend import OpenAIBackend

        return OpenAIBackend(OpenAIClient.from_config(gen), progress=gen.progress, desc=desc)
    raise ConfigError(f"unknown generation.backend '{gen.backend}' (available: transformers, vllm, openai)")


def check_generation(gen) -> None:
    """Refuse sampling settings no backend can honour, before a model is loaded (a zero batch
    or budget would otherwise fail deep inside generate)."""
    from safetrigger.errors import ConfigError

    for name in ("batch_size", "thinking_budget", "max_new_tokens", "num_samples", "save_every"):
        value = getattr(gen, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"generation.{name} must be an integer >= 1, got {value!r}")
    block = gen.kv_block_size
    if isinstance(block, bool) or not isinstance(block, int) or block < 0 or block % 16:
        # vLLM would refuse it only deep inside its engine start-up
        raise ConfigError(f"generation.kv_block_size must be 0 (auto) or a positive multiple of 16, got {block!r}")
    if gen.temperature < 0:
        raise ConfigError(f"generation.temperature must be >= 0 (0 = greedy), got {gen.temperature!r}")
    if not 0 < gen.top_p <= 1:
        raise ConfigError(f"generation.top_p must be in (0, 1], got {gen.top_p!r}")
    if gen.repetition_penalty <= 0:
        raise ConfigError(f"generation.repetition_penalty must be > 0 (1.0 = off), got {gen.repetition_penalty!r}")


def needs_weights(gen) -> bool:
    """Whether ``gen.backend`` needs transformers weights in this process (a server backend
    only needs the tokenizer; vLLM loads the weights itself, in its engine)."""
    return gen.backend == "transformers"


def release_engines() -> bool:
    """Free any kept generation engine (vLLM) before a stage needs the memory; a no-op otherwise."""
    import sys

    mod = sys.modules.get("safetrigger.generation.vllm_backend")
    return bool(mod and mod.release_engines())


# Fields that change how fast or how robustly text is produced, never which text.
_TRANSPORT = ("batch_size", "progress", "save_every", "max_concurrency", "max_retries", "request_timeout", "request_log", "api_key_env",
              # vLLM engine sizing: where and how fast, never which text; left out so that adding
              # them kept old run dirs resumable.
              "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len", "enforce_eager",
              "cpu_kvcache_gib", "adapter_route", "kv_block_size")
_SERVER = ("api_base", "api_model")


def output_settings(gen) -> dict:
    """The generation settings that determine outputs (for run-dir fingerprints). Server
    fields count only for a server backend, so adding them kept old run dirs resumable."""
    from dataclasses import asdict

    skip = _TRANSPORT + (() if gen.backend == "openai" else _SERVER)
    out = {k: v for k, v in asdict(gen).items() if k not in skip}
    # Run dirs made before the penalty spared the block's tokens resume with it set false.
    if not out.get("penalty_spares_format", True):
        del out["penalty_spares_format"]
    if not out.get("penalty_spares_leading", False):  # at its default: earlier run dirs resume
        out.pop("penalty_spares_leading", None)
    return out
