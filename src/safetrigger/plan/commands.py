"""The launch commands of each stage, as a user pastes them on the rented node.

vLLM stages that iterate rows (generate, trigger, sample, score) run as ``--shard i/n`` processes,
one engine per group of ``tensor_parallel_size`` devices, then once unsharded to merge the shard
files and write the stage's stats. Training runs under ``accelerate launch`` with the strategy
the memory check picked, then ``safetrigger <stage>`` records it (it finds the finished training
and returns its stats instead of training again).
"""

from __future__ import annotations

SHARDED_STAGES = ("generate", "trigger", "sample", "score")
CAPABILITY_TASKS = "arc_easy,arc_challenge,drop,winogrande"


def sharded(stage: str, config: str, devices: int, tp: int, gpu: bool) -> list[str]:
    shards = max(devices // tp, 1) if gpu else 1
    if shards == 1:
        return [f"safetrigger {stage} {config}"]
    lines = []
    for i in range(shards):
        ids = ",".join(str(d) for d in range(i * tp, (i + 1) * tp))
        lines.append(f"CUDA_VISIBLE_DEVICES={ids} safetrigger {stage} {config} --shard {i}/{shards} > {stage}.shard{i}.log 2>&1 &")
    lines += ["wait", f"safetrigger {stage} {config}   # merges the shard files, writes {stage}.stats.json"]
    return lines


def stage_commands(cfg, config: str, devices: int, gpu: bool, strategies: dict[str, str | None]) -> dict[str, list[str]]:
    """Stage name -> shell lines, in ``cfg.stages`` order. ``strategies``: training stage ->
    accelerate config file (None when nothing fits: the command is still given, marked)."""
    run, tp = cfg.run_dir, cfg.generation.tensor_parallel_size
    out: dict[str, list[str]] = {}
    for stage in cfg.stages:
        if stage in SHARDED_STAGES:
            out[stage] = sharded(stage, config, devices, tp, gpu)
        elif stage in ("sft", "dpo"):
            out[stage] = _training(stage, cfg, config, devices, gpu, strategies.get(stage))
        else:
            out[stage] = [f"safetrigger {stage} {config}"]
    if "eval" in cfg.stages:
        sft = (f"{cfg.model.name_or_path} --adapter {run}/{cfg.sft.output_subdir}/adapter" if cfg.sft.use_lora
               else f"{run}/{cfg.sft.output_subdir}/model")
        models = {"base": cfg.model.name_or_path, "sft": sft}
        out["capability"] = [
            f"safetrigger capability {spec} --config {config} --tasks {CAPABILITY_TASKS} --output {run}/capability/{m}"
            for m, spec in models.items()
        ] + ["# ST-D: its SFT + DPO adapters stacked: merge them first (save_merged) and pass the merged directory as MODEL"]
    return out


def _training(stage: str, cfg, config: str, devices: int, gpu: bool, accel: str | None) -> list[str]:
    run = cfg.run_dir
    section = getattr(cfg, stage)
    entry = f"safetrigger.training.{stage}_entry --config {config} --dataset {run}/{stage}.jsonl --output {run}/{section.output_subdir}"
    if stage == "dpo":  # DPO starts from ST-S, exactly as the dpo stage loads it (stages.trained)
        entry += (f" --model.adapter {run}/{cfg.sft.output_subdir}/adapter --model.merge_adapter true" if cfg.sft.use_lora
                  else f" --model-path {run}/{cfg.sft.output_subdir}/model")
    if not gpu or devices == 1:
        return [f"safetrigger {stage} {config}"]
    lines = [] if accel else ["# nothing fits in memory as configured: see the memory table's advice first"]
    lines.append(f"accelerate launch --config_file {accel or 'configs/accelerate/deepspeed_zero3.yaml'} --num_processes {devices} -m {entry}")
    lines.append(f"safetrigger {stage} {config}   # records the finished training in the run manifest")
    return lines
