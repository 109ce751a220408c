"""Generation: a backend interface (text in, completions out), the transformers backend, and
the two-phase reasoning protocol with a thinking budget."""

from safetrigger.generation.base import Completion, GenerationBackend, SamplingParams
from safetrigger.generation.reasoning import Response, build_prompts, generate_responses

__all__ = ["Completion", "GenerationBackend", "SamplingParams", "Response", "build_prompts", "generate_responses", "make_backend"]


def make_backend(loaded, gen) -> GenerationBackend:
    """The configured backend for a loaded model (``gen.backend``)."""
    from safetrigger.chat_templates import FAMILIES
    from safetrigger.errors import ConfigError

    if gen.backend == "transformers":
        from safetrigger.generation.transformers_backend import TransformersBackend

        return TransformersBackend(
            loaded.model, loaded.tokenizer, batch_size=gen.batch_size, progress=gen.progress,
            end_tokens=[FAMILIES[loaded.family].end_of_turn],
        )
    raise ConfigError(f"unknown generation.backend '{gen.backend}' (available: transformers)")
