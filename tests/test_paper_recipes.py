"""The paper recipes (configs/paper/) load, validate, and hold the paper's sizes; no network."""

from pathlib import Path

import pytest
import yaml

from safetrigger.config import load_config
from safetrigger.data.hub import parse_hub_pool
from safetrigger.judges import judge_from_config
from safetrigger.plan.resolve import check_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
MODELS = {
    "r1-distill-llama-8b": ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek_r1"),
    "r1-distill-llama-70b": ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "deepseek_r1"),
    "qwen3-8b": ("Qwen/Qwen3-8B", "qwen3"),
    "qwen3-32b": ("Qwen/Qwen3-32B", "qwen3"),
}
# Values the paper does not give: each must say so in its comment.
SILENT = {"thinking_budget", "temperature", "delta", "w_a", "w_b", "w_c", "beta", "learning_rate", "num_epochs",
          "safe_budget", "max_attempts", "max_new_tokens", "top_p"}


def test_the_four_paper_models_have_a_recipe():
    assert sorted(p.stem for p in RECIPES) == sorted(MODELS)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_offline(path):
    cfg = load_config(path)
    assert check_config(cfg) == []
    name, template = MODELS[path.stem]
    assert (cfg.model.name_or_path, cfg.model.template, cfg.model.reasoning) == (name, template, "native")
    assert cfg.generation.backend == "vllm"
    # 10k UltraFeedback + 10k PKU-SafeRLHF + 10k WildJailbreak (SFT); 20k WildJailbreak x 4 (DPO)
    assert {parse_hub_pool(k)[0]: v for k, v in cfg.data.pool.items()} == {"ultrafeedback": 10000, "pku-saferlhf": 10000, "wildjailbreak": 10000}
    assert {parse_hub_pool(k)[0]: v for k, v in cfg.sample.pool.items()} == {"wildjailbreak": 20000}
    assert cfg.sample.num_samples == 4
    for t in (cfg.sft, cfg.dpo):
        assert (t.use_lora, t.lora_r, t.lora_alpha, t.lora_dropout) == (True, 64, 16, 0.05)
    judge = judge_from_config(cfg.judge)  # builds without loading weights
    assert (judge.name, judge.model, judge.runner) == ("llama-guard", "meta-llama/Llama-Guard-3-8B", "vllm")
    assert cfg.generation.gpu_memory_utilization + cfg.judge.gpu_memory_utilization <= 0.95
    assert set(cfg.eval.benchmarks) == {"advbench", "hex-phi", "xstest-unsafe", "xstest", "wildjailbreak-eval", "msj", "pap"}
    assert cfg.eval.judges[0] == "llama-guard"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_value_the_paper_is_silent_on_says_so(path):
    unmarked = []
    for line in path.read_text().splitlines():
        key = line.split(":", 1)[0].strip()
        if key in SILENT and "(our default; paper silent)" not in line:
            unmarked.append(line.strip())
    assert unmarked == []


def test_recipes_differ_only_in_model_specific_lines():
    """One recipe, four models: everything but the model, its template and its parallelism is shared."""
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("pool", "benchmarks", "models"):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    specific = {"run_dir", "model.name_or_path", "model.template", "generation.tensor_parallel_size",
                "generation.gpu_memory_utilization"}
    tables = [{k: v for k, v in flat(yaml.safe_load(p.read_text())) if k not in specific} for p in RECIPES]
    assert all(t == tables[0] for t in tables)
