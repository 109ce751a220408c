"""The plan as text: resolution, tokens and device-hours per stage, memory, disk, commands."""

from __future__ import annotations

from safetrigger.plan.resolve import READY


def _table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    right = [i < len(align) and align[i] == "r" for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return [line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]]


def _m(tokens: float) -> str:
    return f"{tokens / 1e6:,.1f}M" if tokens >= 1e5 else f"{tokens:,.0f}"


def _h(hours: float) -> str:
    """Hours with a unit that keeps small stages readable: 3.2s, 4.5m, 12.14h."""
    if hours == float("inf"):
        return "inf"
    s = hours * 3600
    return f"{s:.1f}s" if s < 60 else f"{s / 60:.1f}m" if s < 3600 else f"{hours:,.2f}h"


def render(plan: dict) -> str:
    hw = plan["hardware"]
    out = [f"safetrigger plan: {plan['config']} on {hw['label']} (an estimate: see the assumptions at the end)", ""]
    out.append("Config check: " + ("ok" if not plan["problems"] else f"{len(plan['problems'])} problem(s)"))
    out += [f"  ! {p}" for p in plan["problems"]]
    t = plan["template"]
    out.append(f"Template family: {t['family'] or '?'} ({t['how']})" + (f" - {t['note']}" if t["note"] else ""))
    out += ["", "Resolution"]
    rows = [[r["kind"], r["name"], r["status"], r["used_by"], r["fetch"] or ""] for r in plan["resolution"]]
    out += ["  " + s for s in _table(["kind", "name", "status", "used by", "fetch with"], rows)]
    missing = [r for r in plan["resolution"] if r["status"] not in READY]
    if missing:
        notes = sorted({r["note"] for r in missing if r["note"]})
        out += [f"  {len(missing)} item(s) not on disk" + (f" ({'; '.join(notes)})" if notes else "")]
    if "stages" not in plan:
        return "\n".join(out + [""] + plan.get("notes", [])) + "\n"
    basis = plan["stages"][0]["basis"] if plan["stages"] else "no stages"
    out += ["", f"Tokens and device-hours per stage ({basis})"]
    rows = []
    for w in plan["stages"]:
        tokens = f"train {_m(w['train_tokens'])}" + (f" + ref {_m(w['ref_tokens'])}" if w["ref_tokens"] else "") if w["kind"] == "train" else ""
        rows.append([w["stage"], _short(w["model"]), w["kind"], f"{w['requests']:,}", _m(w["prompt_tokens"]) if w["kind"] != "train" else "",
                     _m(w["gen_tokens"]) if w["kind"] == "generate" else "", tokens, w.get("batch") or "",
                     "?" if w["device_hours"] is None else _h(w["device_hours"]), w["note"]])
    out += ["  " + s for s in _table(["stage", "model", "kind", "rows", "prefill tok", "decode tok", "train tok", "batch", "device-time", "note"], rows, "lllrrrrrrl")]
    wall = plan["wall_clock_hours_per_stage"]
    out += ["", f"  per stage, device-time / wall-clock on {hw['label']}:",
            "  " + "  ".join(f"{k} {_h(v)}/{_h(wall[k])}" for k, v in plan["device_hours"].items()),
            f"  total {_h(plan['total_device_hours'])} device-time, {_h(plan['wall_clock_hours'])} wall-clock "
            f"(--shard stages and training on every device, activation and eval on one engine)"]
    if plan["lengths"].get("measured"):
        out.append("  lengths measured in the run dir: " + ", ".join(f"{k} ({v})" for k, v in plan["lengths"]["measured"].items()))
    out += _memory(plan)
    d = plan["disk"]
    out += ["", f"Disk: {d['total_gib']:,.1f} GiB"] + [f"  {k}: {v:,.1f} GiB" for k, v in d["items_gib"].items()]
    out += ["", "Commands"]
    for stage, lines in plan["commands"].items():
        out.append(f"  # {stage}")
        out += [f"  {line}" for line in lines]
    a = plan["assumptions"]
    out += ["", "Assumptions (not measured: no GPU run of this toolkit exists yet)",
            f"  {hw['name']}: {hw['bf16_tflops']:g} TFLOP/s bf16 dense, {hw['bandwidth_tbs']:g} TB/s, {hw['memory_gib']:g} GiB ({hw['source']})"]
    out += [f"  {k}: {v}" for k, v in a.items()]
    out += [f"  note: {n}" for n in plan.get("notes", [])]
    return "\n".join(out) + "\n"


def _short(model: str) -> str:
    return model.split("/")[-1]


def _memory(plan: dict) -> list[str]:
    mem = plan.get("memory", {})
    out = []
    for stage in ("sft", "dpo"):
        if stage not in mem:
            continue
        m = mem[stage]
        out += ["", f"Memory per device, {stage} (max_length {m['max_length']}, per_device_batch_size {m['per_device_batch_size']}; "
                    f"picked: {m['picked'] or 'nothing fits'})"]
        rows = [["LoRA" if o["lora"] else "full", o["strategy"], f"{o['weights_gib']:.1f}", f"{o['grads_optimizer_gib']:.1f}",
                 f"{o['activations_gib']:.1f}", f"{o['total_gib']:.1f}", "yes" if o["fits"] else "no", "; ".join(o["advice"])] for o in m["options"]]
        out += ["  " + s for s in _table(["mode", "strategy", "weights", "grad+optim", "activations", "total GiB", "fits", "what to change"], rows, "llrrrrll")]
    g = mem.get("generation")
    if g:
        line = (f"  generation: tp {g['tensor_parallel_size']}, weights {g['weights_gib_per_device']:.1f} GiB/device, "
                f"KV cache {g['kv_cache_gib_per_device']:.1f} GiB/device")
        if "judge" in g:
            j = g["judge"]
            line += f"; judge engine beside it: {j['gpu_memory_utilization']} of a device, KV {j['kv_cache_gib']:.1f} GiB"
        out += ["", "Memory per device, generation", line + (" - fits" if g["fits"] else " - DOES NOT FIT")]
        out += [f"  ! {a}" for a in g["advice"]]
    return out
