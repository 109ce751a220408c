"""`safetrigger plan`: golden numbers on a small config (computed by hand in the comments),
resolution offline and with an unreachable hub, measured lengths from a run dir, the CLI."""

import json
from pathlib import Path

import pytest

from safetrigger.cli import main
from safetrigger.config import load_config
from safetrigger.errors import ConfigError
from safetrigger.plan import make_plan
from safetrigger.plan.hardware import parse_hardware
from safetrigger.plan.resolve import MISSING, READY, resolve

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT / "tests" / "fixtures" / "plan_pool.jsonl"  # 4 general queries of exactly 40 characters
N = 134_515_008  # parameters of the embedded SmolLM2-135M, from its config.json shapes


def small_config(tmp_path, extra: str = "") -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(
        f"run_dir: {tmp_path / 'run'}\nstages: [generate, sft]\n"
        "model: {name_or_path: embedded, template: chatml, reasoning: 'off'}\n"
        "generation: {backend: vllm, max_new_tokens: 100}\n"
        f"data: {{pool: {{'general={POOL}': 0}}}}\n" + extra
    )
    return p


def test_the_fixture_is_what_the_golden_numbers_assume():
    lines = POOL.read_text().splitlines()
    assert len(lines) == 4 and all(len(json.loads(x)["text"]) == 40 for x in lines)


def test_golden_numbers_small_config(tmp_path):
    path = small_config(tmp_path)
    plan = make_plan(load_config(path), str(path), "1xA100-80GB", probe=False)
    gen, sft = plan["stages"]
    # tokens: 4 queries x (40 chars / 4 + 16 template tokens) = 104 prompt tokens; 4 x 100 = 400 written
    assert (gen["requests"], gen["prompt_tokens"], gen["gen_tokens"]) == (4, 104, 400)
    # prefill: 2 N x 104 / (312e12 x 0.5) s
    assert gen["prefill_h"] * 3600 == pytest.approx(2 * N * 104 / 1.56e14, rel=1e-3)
    # decode: context 26 + 100/2 = 76 tokens; KV 2x30 layers x 3 heads x 64 x 2 B = 23040 B/token;
    # batch: min(vLLM's 256, the 4 rows handed over, KV room ((80 x 0.9 - 2) GiB - 2N) / (23040 x 76) = 42770) = 4;
    # a step reads 2N + 4 x 76 x 23040 = 276,034,176 B at 2.0e12 x 0.6 B/s = 2.30028e-4 s
    # (compute 2N x 4 / 1.56e14 = 6.9e-6 s is faster); 400 / 4 = 100 steps -> 2.30028e-2 s
    assert gen["batch"] == 4
    assert gen["decode_h"] * 3600 == pytest.approx(2.30028e-2, rel=1e-3)
    # SFT: 4 examples x (26 + 100) tokens x 2 epochs = 1008; LoRA 4N per token at 312e12 x 0.35
    assert sft["train_tokens"] == 1008
    assert sft["train_h"] * 3600 == pytest.approx(4 * N * 1008 / 1.092e14, rel=1e-3)
    assert "LoRA saves 33%" in sft["note"]  # 4N instead of 6N
    # memory, LoRA under DDP: 2N + 4A weights, 12A states (A = 19,537,920 LoRA r64 parameters),
    # activations 4 x (30 x 34 x 126 x 576 + 8 x 126 x 49152) = 494,290,944 B, + 2 GiB reserve
    ddp = next(o for o in plan["memory"]["sft"]["options"] if o["lora"] and o["strategy"] == "ddp")
    assert ddp["total_gib"] == pytest.approx((2 * N + 16 * 19_537_920 + 494_290_944) / 2**30 + 2, abs=0.01)
    assert ddp["fits"] and plan["memory"]["sft"]["picked"] == "ddp"
    assert plan["commands"]["generate"] == [f"safetrigger generate {path}"]
    assert plan["total_device_hours"] == pytest.approx(sum(plan["device_hours"].values()), abs=0.01)


def test_full_fine_tuning_costs_6n_and_two_devices_shard(tmp_path):
    path = small_config(tmp_path, "sft: {use_lora: false}\n")
    plan = make_plan(load_config(path), str(path), "2xA100-80GB", probe=False)
    sft = plan["stages"][1]
    assert sft["train_h"] * 3600 == pytest.approx(6 * N * 1008 / 1.092e14, rel=1e-3)
    lines = plan["commands"]["generate"]
    assert lines[0].startswith("CUDA_VISIBLE_DEVICES=0 safetrigger generate") and "--shard 0/2" in lines[0]
    assert "--shard 1/2" in lines[1] and lines[2] == "wait" and lines[3].startswith(f"safetrigger generate {path}")
    assert plan["commands"]["sft"][0].startswith("accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 -m safetrigger.training.sft_entry")
    # wall-clock: a --shard stage and training keep both devices busy
    assert plan["wall_clock_hours_per_stage"]["generate"] == pytest.approx(plan["device_hours"]["generate"] / 2, abs=1e-3)


def test_70b_lora_needs_sharding_and_full_fine_tuning_fits_nowhere_on_8_h100():
    path = ROOT / "configs" / "paper" / "r1-distill-llama-70b.yaml"
    plan = make_plan(load_config(path), str(path), "8xH100-80GB", probe=False)
    lora_ddp = next(o for o in plan["memory"]["sft"]["options"] if o["lora"] and o["strategy"] == "ddp")
    assert not lora_ddp["fits"] and any("ZeRO-3" in a for a in lora_ddp["advice"])  # 141 GB of weights per device
    assert plan["memory"]["sft"]["picked"] == "zero3"
    assert "deepspeed_zero3.yaml" in plan["commands"]["sft"][0]
    # full fine-tuning: 16 bytes x 70.6e9 / 8 devices = 131 GiB per device even sharded
    full = load_config(path, ["--sft.use_lora", "false"])
    plan = make_plan(full, str(path), "8xH100-80GB", probe=False)
    assert plan["memory"]["sft"]["picked"] is None
    assert plan["commands"]["sft"][0].startswith("# nothing fits")


def test_measured_lengths_from_a_run_dir_replace_the_budgets(tmp_path):
    path = small_config(tmp_path)
    run = tmp_path / "pilot"
    run.mkdir()
    rows = [{"id": f"q{i}:0", "think_tokens": 0, "answer_tokens": 20 + 10 * i} for i in range(3)]  # mean 30
    (run / "generate.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    plan = make_plan(load_config(path), str(path), "1xA100-80GB", run_dir=str(run), probe=False)
    assert plan["stages"][0]["gen_tokens"] == 4 * 30
    assert "answer_1" in plan["lengths"]["measured"]
    with pytest.raises(ConfigError, match="not a directory"):
        make_plan(load_config(path), str(path), run_dir=str(tmp_path / "nope"), probe=False)


def test_paper_recipe_offline_every_hub_item_missing_with_its_command():
    cfg = load_config(ROOT / "configs" / "paper" / "r1-distill-llama-8b.yaml")
    items = resolve(cfg, probe=True)  # HF_HUB_OFFLINE=1 in tests: the hub is not asked
    hub = [i for i in items if "/" in i.name]
    assert hub and all(i.status == MISSING and i.fetch.startswith("huggingface-cli download") for i in hub)
    assert {"meta-llama/Llama-Guard-3-8B", "allenai/wildjailbreak", "openbmb/UltraFeedback"} <= {i.name for i in hub}
    assert all(i.status in READY for i in items if i.kind == "benchmark" and "/" not in i.name)


def test_unreachable_hub_is_asked_once_and_every_item_is_missing(monkeypatch):
    import huggingface_hub

    calls = []

    def refuse(self, repo_id, timeout=None, **kw):
        calls.append(repo_id)
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", refuse)
    items = resolve(load_config(ROOT / "configs" / "paper" / "qwen3-8b.yaml"), probe=True)
    assert len(calls) == 1
    assert all(i.status == MISSING for i in items if "/" in i.name)


def test_a_cached_model_is_found_in_the_hub_cache(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--Qwen--Qwen3-8B" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                                  "intermediate_size": 128, "vocab_size": 1000}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    path = ROOT / "configs" / "paper" / "qwen3-8b.yaml"
    plan = make_plan(load_config(path), str(path), probe=False)
    model = next(r for r in plan["resolution"] if r["kind"] == "model")
    assert model["status"] == "cached" and model["fetch"] is None
    tok = next(r for r in plan["resolution"] if r["kind"] == "tokenizer" and r["name"] == "Qwen/Qwen3-8B")
    assert tok["status"] == MISSING
    # the cached config.json beats the built-in table: a 2-layer toy model is nearly free to run
    assert plan["device_hours"]["generate"] < 0.1  # the built-in Qwen3-8B sizes give ~12


def test_unknown_hardware_is_refused_with_the_known_names():
    assert parse_hardware("8xH100-80GB").count == 8
    with pytest.raises(ConfigError, match="known: H100-80GB"):
        parse_hardware("8xB300")


def test_cli_table_and_json(capsys):
    path = str(ROOT / "configs" / "paper" / "r1-distill-llama-8b.yaml")
    assert main(["plan", path]) == 0
    out = capsys.readouterr().out
    for part in ("Resolution", "missing", "Tokens and device-hours", "Memory per device, sft", "Disk:", "Commands",
                 "accelerate launch", "--shard 7/8", "Assumptions"):
        assert part in out
    assert main(["plan", path, "--hardware", "4xA100-80GB", "--json", "--run-dir", str(ROOT / "nowhere")]) == 2
    assert main(["plan", path, "--hardware", "4xA100-80GB", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["hardware"]["label"] == "4xA100-80GB" and plan["total_device_hours"] > 0


def test_a_reachable_gated_repo_says_so(monkeypatch):
    import types

    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo_id, timeout=None: types.SimpleNamespace(gated="manual"))
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo_id, timeout=None: types.SimpleNamespace(gated=False))
    items = resolve(load_config(ROOT / "configs" / "paper" / "r1-distill-llama-8b.yaml"), probe=True)
    guard = next(i for i in items if i.kind == "judge")
    assert guard.status == "reachable" and "gated" in guard.note and guard.fetch == "huggingface-cli download meta-llama/Llama-Guard-3-8B"
    assert next(i for i in items if i.name == "openbmb/UltraFeedback").status == "reachable"
