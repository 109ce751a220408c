"""Device-hours per stage from a stated throughput model (an estimate, not a measurement).

Generation (vLLM), per engine of ``tp`` devices:

* prefill is compute-bound: ``2 * N * prompt_tokens`` FLOPs at ``PREFILL_MFU`` of peak;
* decode is memory-bound: each step reads the weights once plus the KV cache of the ``B``
  sequences in flight, at ``DECODE_BW_EFF`` of peak bandwidth (or is compute-bound at
  ``2 * N * B`` FLOPs per step, whichever is slower). ``B`` is what the KV cache sustains:
  ``min(MAX_NUM_SEQS, rows handed over at once, free KV memory / (KV bytes per token x mean
  context))``, the mean context being the prompt plus half the reply; a stage hands the engine
  ``generation.save_every`` queries (x samples) per call.

Training: ``6 * N * tokens`` FLOPs for full fine-tuning (forward 2N, backward 4N per token; Kaplan
et al. 2020, "Scaling Laws for Neural Language Models", section 2.1). LoRA skips the gradients of
the frozen weights, a third of the work: ``4 * N`` (the adapter's own FLOPs, ~2% at r 64, are
ignored). Gradient checkpointing recomputes the forward: ``+2 * N``. The DPO reference forward
adds ``2 * N`` per reference token. All at ``TRAIN_MFU`` of peak.

Work spreads perfectly over the devices (``--shard`` processes, data-parallel training), so
wall-clock = device-hours / devices. The assumed efficiencies are round numbers chosen, not
measured (no GPU was lent to this project): replace them by a pilot run's timings when you can.
"""

from __future__ import annotations

from dataclasses import dataclass

from safetrigger.plan.architecture import Architecture
from safetrigger.plan.hardware import Hardware

PREFILL_MFU = 0.5
DECODE_BW_EFF = 0.6
TRAIN_MFU = 0.35
MAX_NUM_SEQS = 256
"""vLLM's default cap on sequences in flight (``max_num_seqs``)."""
ENGINE_RESERVE_GIB = 2.0
"""Per device: CUDA context, activations of a step, CUDA graphs (assumed)."""
GIB = 2 ** 30
ASSUMPTIONS = {
    "prefill_mfu": PREFILL_MFU, "decode_bandwidth_efficiency": DECODE_BW_EFF, "train_mfu": TRAIN_MFU,
    "max_num_seqs": MAX_NUM_SEQS, "engine_reserve_gib_per_device": ENGINE_RESERVE_GIB,
    "bytes_per_parameter": 2, "lora_train_flops_per_token": "4N (full: 6N); +2N with gradient checkpointing",
}


@dataclass
class StageCost:
    stage: str
    model: str
    kind: str
    prefill_h: float = 0.0
    decode_h: float = 0.0
    train_h: float = 0.0
    batch: int = 0
    """Sequences in flight the KV cache sustains (generation)."""
    note: str = ""

    @property
    def device_hours(self) -> float:
        return self.prefill_h + self.decode_h + self.train_h

    def to_dict(self) -> dict:
        return {"stage": self.stage, "model": self.model, "kind": self.kind, "prefill_h": _sig(self.prefill_h),
                "decode_h": _sig(self.decode_h), "train_h": _sig(self.train_h),
                "device_hours": _sig(self.device_hours), "batch": self.batch, "note": self.note}


def _sig(x: float) -> float:
    """Six significant digits: small stages (seconds) keep their value in the JSON."""
    return float(f"{x:.6g}")


def sustained_batch(arch: Architecture, hw: Hardware, tp: int, mem_util: float, context: float, in_flight: int) -> int:
    """Sequences one engine of ``tp`` devices keeps in flight at a mean context of ``context``
    tokens: vLLM's cap, the KV cache's room, and what the stage hands it at once (``in_flight``)."""
    free = tp * (hw.device.memory_gib * mem_util - ENGINE_RESERVE_GIB) * GIB - 2 * arch.params
    if free <= 0 or context <= 0:
        return 0
    return int(min(MAX_NUM_SEQS, in_flight, free // (arch.kv_bytes_per_token * context)))


def generation_cost(work, arch: Architecture, hw: Hardware, tp: int, mem_util: float, in_flight: int = MAX_NUM_SEQS) -> StageCost:
    peak = hw.device.bf16_tflops * 1e12
    bw = hw.device.bandwidth_tbs * 1e12 * DECODE_BW_EFF
    n = arch.params
    cost = StageCost(work.stage, work.model, work.kind, note=work.note)
    cost.prefill_h = 2 * n * work.prompt_tokens / (peak * PREFILL_MFU) / 3600
    if work.gen_tokens and work.requests:
        mean_prompt = work.prompt_tokens / work.requests
        mean_reply = work.gen_tokens / work.requests
        context = mean_prompt + mean_reply / 2
        b = sustained_batch(arch, hw, tp, mem_util, context, in_flight)
        cost.batch = b
        if b == 0:
            cost.decode_h = float("inf")
            cost.note = (cost.note + "; " if cost.note else "") + "no KV-cache room: raise tensor_parallel_size or gpu_memory_utilization"
            return cost
        step_bytes = 2 * n + b * context * arch.kv_bytes_per_token  # over the tp devices of the engine
        step_s = max(step_bytes / (tp * bw), 2 * n * b / (tp * peak * PREFILL_MFU))
        cost.decode_h = work.gen_tokens / b * step_s * tp / 3600
    return cost


def train_flops_per_token(n: int, lora: bool, checkpointing: bool) -> float:
    return (4 if lora else 6) * n + (2 * n if checkpointing else 0)


def training_cost(work, arch: Architecture, hw: Hardware, train_cfg) -> StageCost:
    peak = hw.device.bf16_tflops * 1e12 * TRAIN_MFU
    per_token = train_flops_per_token(arch.params, train_cfg.use_lora, train_cfg.gradient_checkpointing)
    flops = per_token * work.train_tokens + 2 * arch.params * work.ref_tokens
    cost = StageCost(work.stage, work.model, work.kind, note=work.note)
    cost.train_h = flops / peak / 3600
    full = train_flops_per_token(arch.params, False, train_cfg.gradient_checkpointing) * work.train_tokens + 2 * arch.params * work.ref_tokens
    if train_cfg.use_lora:
        cost.note = (cost.note + "; " if cost.note else "") + f"LoRA saves {1 - flops / full:.0%} of full fine-tuning's FLOPs"
    return cost
