"""Memory per device of a training stage, for LoRA and full fine-tuning under DDP, ZeRO-3 and
FSDP, and whether generation fits; with what to change when it does not.

Bytes per parameter (mixed precision with AdamW, Rajbhandari et al. 2020, "ZeRO", section 3.1):
bf16 weights 2 + bf16 gradients 2 + fp32 master weights, momentum and variance 12 = 16 for
trained parameters; frozen weights (LoRA's base) cost 2. LoRA adapters are kept in fp32 by PEFT:
4 + 4 + 8 = 16 bytes per adapter parameter. DDP replicates everything; ZeRO-3 and FSDP (full
sharding) divide weights, gradients and optimizer state by the device count.

Activations per sequence at ``max_length`` ``S`` (Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", eq. 1, with the ``5as/h`` attention-score term dropped
because SDPA / FlashAttention do not store the scores): ``34 * S * h`` bytes per layer; with
gradient checkpointing only each layer's input ``2 * S * h`` is kept, plus one layer's full set
during its recompute. The loss adds fp32 logits and their gradient, ``8 * S * vocab``. A DPO step
holds chosen and rejected: twice the sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safetrigger.plan.architecture import Architecture
from safetrigger.plan.cost import ENGINE_RESERVE_GIB, GIB
from safetrigger.plan.hardware import Hardware

STRATEGIES = {
    "ddp": "configs/accelerate/ddp.yaml",
    "zero3": "configs/accelerate/deepspeed_zero3.yaml",
    "fsdp": "configs/accelerate/fsdp.yaml",
}
FRAMEWORK_RESERVE_GIB = ENGINE_RESERVE_GIB
"""Per device: CUDA context, allocator fragmentation, communication buffers (assumed)."""


@dataclass
class TrainMemory:
    strategy: str
    lora: bool
    weights_gib: float
    grads_optimizer_gib: float
    activations_gib: float
    total_gib: float
    fits: bool
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def activation_bytes(arch: Architecture, seq: int, batch: int, checkpointing: bool) -> float:
    per_layer_full = 34 * seq * arch.hidden
    layers = arch.layers * 2 * seq * arch.hidden + per_layer_full if checkpointing else arch.layers * per_layer_full
    return batch * (layers + 8 * seq * arch.vocab)


def train_memory(arch: Architecture, hw: Hardware, train_cfg, max_length: int, strategy: str, lora: bool, dpo: bool = False) -> TrainMemory:
    n, d = arch.params, hw.count
    shard = d if strategy in ("zero3", "fsdp") else 1
    if lora:
        a = arch.lora_params(train_cfg.lora_r)
        weights = (2 * n + 4 * a) / shard
        states = 12 * a / shard
    else:
        weights = 2 * n / shard
        states = 14 * n / shard
    seqs = train_cfg.per_device_batch_size * (2 if dpo else 1)
    act = activation_bytes(arch, max_length, seqs, train_cfg.gradient_checkpointing)
    total = weights + states + act + FRAMEWORK_RESERVE_GIB * GIB
    cap = hw.device.memory_gib * GIB
    m = TrainMemory(strategy, lora, weights / GIB, states / GIB, act / GIB, total / GIB, total <= cap)
    if not m.fits:
        static = weights + states + FRAMEWORK_RESERVE_GIB * GIB  # what no batch or length setting changes
        if strategy == "ddp" and (weights + states) > 0.5 * cap:
            m.advice.append("shard the model: ZeRO-3 (configs/accelerate/deepspeed_zero3.yaml) or FSDP (configs/accelerate/fsdp.yaml)")
        elif static > cap:
            m.advice.append("even sharded, weights + optimizer state exceed a device: offload the optimizer to CPU "
                            "(offload_optimizer_device: cpu in the DeepSpeed config) or use more devices")
        if static <= cap and not train_cfg.gradient_checkpointing:
            m.advice.append(f"set {train_cfg.section}.gradient_checkpointing: true")
        if static <= cap and train_cfg.per_device_batch_size > 1:
            m.advice.append(f"lower {train_cfg.section}.per_device_batch_size to 1 (raise gradient_accumulation_steps to keep the batch)")
        if not lora:
            m.advice.append(f"train LoRA ({train_cfg.section}.use_lora: true)")
        if act > 0.5 * cap:
            m.advice.append(f"shorten examples: {train_cfg.section}.max_length_cap below {max_length} (longer ones dropped, counted)")
        if not m.advice:
            m.advice.append("use more or larger devices")
    return m


def training_memory(arch: Architecture, hw: Hardware, train_cfg, max_length: int, dpo: bool = False) -> list[TrainMemory]:
    """All six combinations (LoRA / full x DDP / ZeRO-3 / FSDP), the configured mode first."""
    modes = [train_cfg.use_lora, not train_cfg.use_lora]
    return [train_memory(arch, hw, train_cfg, max_length, s, lora, dpo) for lora in modes for s in STRATEGIES]


def pick_strategy(options: list[TrainMemory], lora: bool) -> TrainMemory | None:
    """The first that fits in the configured mode, DDP preferred (no sharding traffic)."""
    return next((m for m in options if m.lora == lora and m.fits), None)


def generation_memory(arch: Architecture, hw: Hardware, tp: int, mem_util: float, judge: Architecture | None = None,
                      judge_util: float | None = None) -> dict:
    """Weights per device of an engine and the KV room left; a judge engine on the same device must fit beside it."""
    per_dev = 2 * arch.params / tp / GIB
    budget = hw.device.memory_gib * mem_util - ENGINE_RESERVE_GIB
    out = {"tensor_parallel_size": tp, "weights_gib_per_device": round(per_dev, 2),
           "kv_cache_gib_per_device": round(budget - per_dev, 2), "fits": budget - per_dev > 0, "advice": []}
    if not out["fits"]:
        out["advice"].append(f"raise generation.tensor_parallel_size above {tp} or generation.gpu_memory_utilization above {mem_util}")
    if judge is not None:
        share = judge_util or 0.9
        jfree = hw.device.memory_gib * share - ENGINE_RESERVE_GIB - 2 * judge.params / GIB
        out["judge"] = {"gpu_memory_utilization": share, "weights_gib": round(2 * judge.params / GIB, 2), "kv_cache_gib": round(jfree, 2)}
        if mem_util + share > 0.95:
            out["fits"] = False
            out["advice"].append(f"generation.gpu_memory_utilization ({mem_util}) + judge.gpu_memory_utilization ({share}) "
                                 f"exceed 0.95 of one device: lower them (e.g. 0.55 + 0.3)")
        if jfree <= 0:
            out["fits"] = False
            out["advice"].append("the judge engine has no KV room: raise judge.gpu_memory_utilization")
    return out
