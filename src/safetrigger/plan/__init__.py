"""``safetrigger plan CONFIG``: before renting GPUs, does the config resolve, and what will each
stage cost, on which hardware, with which commands? Offline, in seconds, downloading nothing.

Modules: ``hardware`` (device table with sources), ``architecture`` (model sizes from config.json),
``resolve`` (config checks; models, tokenizers, datasets, judges: on disk / reachable / missing),
``tokens`` (work per stage, upper bound or measured in a pilot run dir), ``cost`` (throughput
model, device-hours), ``memory`` (training and generation memory per device), ``disk``,
``commands`` (launch lines), ``render`` (the text tables).

Every number is an estimate from a stated model (see ``cost.ASSUMPTIONS``); no GPU run of this
toolkit has measured it.
"""

from __future__ import annotations

from pathlib import Path

from safetrigger.errors import ConfigError

DEFAULT_HARDWARE = "8xH100-80GB"


def parallelism(stage: str, cfg, hw, tp: int) -> int:
    """Devices a stage keeps busy: all of them for --shard stages and training, one engine's
    (tensor_parallel_size) for the stages that run as one process (activation, eval)."""
    from safetrigger.plan.commands import SHARDED_STAGES

    if not hw.device.gpu:
        return 1
    if stage in SHARDED_STAGES:
        return max(hw.count // tp, 1) * tp
    if stage in ("sft", "dpo"):
        return hw.count
    return tp


def make_plan(cfg, config_path: str, hardware: str = DEFAULT_HARDWARE, run_dir: str | None = None, probe: bool = True) -> dict:
    from safetrigger.plan import cost, memory
    from safetrigger.plan.cost import _sig
    from safetrigger.plan.architecture import architecture
    from safetrigger.plan.commands import stage_commands
    from safetrigger.plan.disk import disk_estimate
    from safetrigger.plan.hardware import parse_hardware
    from safetrigger.plan.resolve import check_config, judge_model, resolve, template_check
    from safetrigger.plan.tokens import budget_lengths, measured_lengths, stage_work

    hw = parse_hardware(hardware)
    problems = check_config(cfg)
    items = resolve(cfg, probe=probe)
    plan: dict = {
        "config": config_path, "hardware": {"label": hw.label, **hw.device.__dict__},
        "assumptions": cost.ASSUMPTIONS, "problems": problems,
        "resolution": [it.__dict__ for it in items], "template": template_check(cfg, items),
    }
    config_json = {it.name: Path(it.path) for it in items if it.path and it.path.endswith("config.json")}
    arch = architecture(cfg.model.name_or_path, config_json.get(cfg.model.name_or_path))
    jid = judge_model(cfg, cfg.judge.name)
    judge_arch = architecture(jid, config_json.get(jid)) if jid else None
    if arch is None:
        plan["notes"] = [f"cost not estimated: the sizes of {cfg.model.name_or_path} are unknown offline "
                         f"(download its config.json: huggingface-cli download {cfg.model.name_or_path} config.json)"]
        return plan
    lengths = measured_lengths(cfg, run_dir) if run_dir else budget_lengths(cfg)
    work = stage_work(cfg, lengths)
    tp = cfg.generation.tensor_parallel_size if hw.device.gpu else 1
    if hw.device.gpu and tp > hw.count:
        raise ConfigError(f"generation.tensor_parallel_size {tp} needs more than the {hw.count} devices of --hardware {hardware}")
    archs = {"base": arch, "sft": arch, "dpo": arch}
    if jid and judge_arch:
        archs[jid] = judge_arch
    costs, unknown = [], []
    for w in work:
        a = archs.get(w.model) or architecture(w.model, config_json.get(w.model))
        if a is None:
            unknown.append(w.model)
            costs.append(None)
            continue
        if w.kind == "train":
            costs.append(cost.training_cost(w, a, hw, getattr(cfg, w.stage)))
        else:
            util = (cfg.judge.gpu_memory_utilization or 0.9) if w.model == jid else cfg.generation.gpu_memory_utilization
            engine_tp = 1 if w.model == jid else tp  # the judge engine is built with one device
            in_flight = min(w.requests, cfg.generation.save_every * max(w.samples, 1)) or 1
            costs.append(cost.generation_cost(w, a, hw, engine_tp, util if hw.device.gpu else 1.0, in_flight))
    per_stage: dict[str, float] = {}
    for c in filter(None, costs):
        per_stage[c.stage] = per_stage.get(c.stage, 0.0) + c.device_hours
    total = sum(per_stage.values())
    wall = {k: v / parallelism(k, cfg, hw, tp) for k, v in per_stage.items()}
    plan.update({
        "lengths": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in lengths.__dict__.items()},
        # one row per (stage, model): its tokens and, when the model's size is known, its cost
        "stages": [{**w.to_dict(), **(c.to_dict() if c else {"device_hours": None})} for w, c in zip(work, costs)],
        "device_hours": {k: _sig(v) for k, v in per_stage.items()},
        "total_device_hours": _sig(total),
        "wall_clock_hours_per_stage": {k: _sig(v) for k, v in wall.items()},
        "wall_clock_hours": _sig(sum(wall.values())),
        "notes": [f"no size known for {m}: its work is not costed" for m in dict.fromkeys(unknown)],
    })
    strategies, mem = {}, {}
    for w in work:
        if w.kind != "train":
            continue
        t = getattr(cfg, w.stage)
        options = memory.training_memory(arch, hw, t, w.max_length, dpo=w.stage == "dpo")
        pick = memory.pick_strategy(options, t.use_lora)
        strategies[w.stage] = memory.STRATEGIES[pick.strategy] if pick else None
        mem[w.stage] = {"max_length": w.max_length, "per_device_batch_size": t.per_device_batch_size,
                        "options": [m.to_dict() for m in options], "picked": pick.strategy if pick else None}
    if hw.device.gpu and cfg.generation.backend == "vllm":
        uses_vllm_judge = jid and judge_arch and cfg.judge.engine == "vllm"
        mem["generation"] = memory.generation_memory(arch, hw, tp, cfg.generation.gpu_memory_utilization,
                                                     judge_arch if uses_vllm_judge else None, cfg.judge.gpu_memory_utilization)
    plan["memory"] = mem
    plan["disk"] = disk_estimate(cfg, arch, judge_arch, work)
    plan["commands"] = stage_commands(cfg, config_path, hw.count, hw.device.gpu, strategies)
    return plan
