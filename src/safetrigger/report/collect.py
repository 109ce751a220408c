"""Read a run dir into one plain dict for the report.

Nothing here raises on bad content: a missing stage, an unreadable stats file, a malformed
``eval/results.json`` or a bad JSONL line become messages the page shows next to the section
they affect. Only "this is not a run dir at all" is an error (:class:`DataError`, exit 2).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from safetrigger.errors import DataError
from safetrigger.timestamps import seconds_between
from safetrigger.report.results import results_view
from safetrigger.report.summarize import summarize_stage

# Pipeline order; names as in the run dir (<name>.stats.json, manifest "stages").
PIPELINE = ["generate", "trigger", "build_sft", "sft", "activation", "sample", "score", "build_dpo", "dpo"]
EVAL_SUBDIR = "eval"
DEFAULT_MAX_SAMPLES = 2000
MAX_TEXT_CHARS = 20_000  # per query / think / safe / answer in the sample browser, to bound the page size


def is_run_dir(path: Path) -> bool:
    """A run dir has a manifest, a stage stats file or an eval folder."""
    if not path.is_dir():
        return False
    return (path / "manifest.json").is_file() or any(path.glob("*.stats.json")) or (path / EVAL_SUBDIR).is_dir()


def read_json(path: Path) -> tuple[Any, str | None]:
    """(object, None) or (None, one-line reason); never raises."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "missing"
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text ({e.reason})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"


def read_jsonl_lenient(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a JSONL file, skipping (and naming) lines that are not JSON objects."""
    rows, bad = [], []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return [], [f"{path.name}: unreadable ({e.strerror or e})"]
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"{path.name} line {n}: not valid JSON ({e.msg})")
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad.append(f"{path.name} line {n}: not a JSON object")
    return rows, bad


def collect(run_dir: str | Path, max_samples: int = DEFAULT_MAX_SAMPLES) -> dict:
    """Everything the report shows, as plain data. Raises DataError only if ``run_dir`` is not a run dir."""
    d = Path(run_dir)
    if not is_run_dir(d):
        what = "does not exist" if not d.exists() else "is not a directory" if not d.is_dir() else \
            "has no manifest.json, no <stage>.stats.json and no eval/ folder"
        raise DataError(f"{d} is not a run dir: it {what} (pass the run_dir a `safetrigger run` wrote)")
    manifest, manifest_error = read_json(d / "manifest.json")
    if manifest is not None and not isinstance(manifest, dict):
        manifest, manifest_error = None, f"expected a JSON object, found {type(manifest).__name__}"
    manifest = manifest or {}
    stages = [_stage(d, name, manifest) for name in PIPELINE]
    ev = collect_eval(d / _eval_subdir(manifest), max_samples)
    dpo = next(s for s in stages if s["name"] == "build_dpo")
    return {
        "run_dir": str(d),
        "name": d.resolve().name,
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "meta": _meta(manifest),
        "manifest_error": manifest_error and f"manifest.json: {manifest_error}",
        "stages": stages,
        "reward_histogram": _reward_histogram(dpo),
        "eval": ev,
    }


def _eval_subdir(m: dict) -> str:
    """``eval.output_subdir`` of the run's config (default ``eval``)."""
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    sub = (cfg.get("eval") if isinstance(cfg.get("eval"), dict) else {}).get("output_subdir")
    return sub if isinstance(sub, str) and sub and ".." not in sub else EVAL_SUBDIR


def _meta(m: dict) -> dict:
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    git = m.get("git")
    return {
        "created": m.get("created"),
        "git": git.get("sha") if isinstance(git, dict) else git,
        "model": model.get("name_or_path"),
        "config_stages": [s.replace("-", "_") for s in cfg.get("stages") or [] if isinstance(s, str)],
        "versions": m.get("versions") if isinstance(m.get("versions"), dict) else {},
    }


def _stage(d: Path, name: str, manifest: dict) -> dict:
    cli = name.replace("_", "-")
    entry = (manifest.get("stages") or {}).get(name) if isinstance(manifest.get("stages"), dict) else None
    entry = entry if isinstance(entry, dict) else {}
    stats, err = read_json(d / f"{name}.stats.json")
    out = {
        "name": name, "cli": cli, "stats_file": f"{name}.stats.json",
        "started": entry.get("started"), "finished": entry.get("finished"),
        "duration_s": seconds_between(entry.get("started"), entry.get("finished")),
        "stats": None, "summary": None, "error": None,
        "hint": f"safetrigger {cli} CONFIG",
    }
    if err == "missing":
        status = entry.get("status")
        out["status"] = "running" if status == "running" else "not run"
        if status == "done":  # the manifest says done but the stats file is gone
            out["status"], out["error"] = "error", f"{name}.stats.json is missing though manifest.json marks the stage done"
        return out
    if err is None and not isinstance(stats, dict):
        err = f"expected a JSON object, found {type(stats).__name__}"
    if err is not None:
        out["status"], out["error"] = "error", f"{name}.stats.json: {err}"
        return out
    out["status"], out["stats"] = "done", stats
    try:
        out["summary"] = summarize_stage(name, stats)
    except Exception as e:  # unexpected shapes inside a valid JSON file: say so, keep the page
        out["status"], out["error"] = "error", f"{name}.stats.json has unexpected content ({type(e).__name__}: {e})"
    return out


def _reward_histogram(dpo_stage: dict) -> dict | None:
    """{"bins": [(R, count)], "error": str|None}, or None when build-dpo has not run."""
    if dpo_stage["status"] == "not run":
        return None
    hist = (dpo_stage["stats"] or {}).get("reward_histogram")
    if dpo_stage["error"]:
        return {"bins": [], "error": dpo_stage["error"]}
    if not isinstance(hist, dict) or not hist:
        return {"bins": [], "error": "build_dpo.stats.json has no reward_histogram"}
    bins = []
    for k, v in hist.items():
        try:
            bins.append((float(k), int(v)))
        except (TypeError, ValueError):
            return {"bins": [], "error": f"reward_histogram entry {k!r}: {v!r} is not a number: count"}
    return {"bins": sorted(bins), "error": None}


# ---------------------------------------------------------------------------- eval/


def collect_eval(ev: Path, max_samples: int) -> dict:
    """``eval/``: results.json (tables, plot series), generations + verdicts (samples), probe.json."""
    out: dict[str, Any] = {"dir": str(ev), "status": "missing", "message": None, "problems": [], "view": None,
                           "samples": [], "samples_total": 0, "samples_cap": max_samples, "filters": {}, "probe": None}
    if not ev.is_dir():
        out["message"] = "eval not run: `safetrigger eval CONFIG`"
        return out
    results, err = read_json(ev / "results.json")
    if err is None and not isinstance(results, dict):
        err = f"expected a JSON object, found {type(results).__name__}"
    if err == "missing":
        out["message"] = f"eval not finished: {ev.name}/results.json is missing (`safetrigger eval CONFIG` writes it)"
    elif err:
        out["status"], out["message"] = "error", f"{ev.name}/results.json: {err}"
    else:
        out["status"] = "ok"
        out["view"] = results_view(results, out["problems"])
    _collect_samples(ev, out, max_samples)
    probe, perr = read_json(ev / "probe.json")
    if perr is None and isinstance(probe, dict):
        keys = ("model", "audit_prompt", "risr", "n_successful_attacks", "false_alarm_rate", "n_benign", "auroc")
        out["probe"] = {k: probe.get(k) for k in keys}
    elif perr != "missing":
        out["problems"].append(f"{ev.name}/probe.json: {perr or 'expected a JSON object'}")
    return out


def outcome(v: dict) -> str:
    """One word for a verdict row: correct / incorrect / no_answer / unsafe / safe / undecided."""
    if v.get("policy") == "no_answer":
        return "no_answer"
    if v.get("correct") is not None:
        return "correct" if v.get("correct") else "incorrect"
    verdict = v.get("verdict") if isinstance(v.get("verdict"), dict) else {}
    unsafe = verdict.get("unsafe")
    return "unsafe" if unsafe is True else "safe" if unsafe is False else "undecided"


def _collect_samples(ev: Path, out: dict, cap: int) -> None:
    gen_root, ver_root = ev / "generations", ev / "verdicts"
    per_file: list[list[dict]] = []
    if not gen_root.is_dir():
        out["problems"].append(f"{ev.name}/generations/ is missing: no samples to browse")
        return
    for model_dir in sorted(p for p in gen_root.iterdir() if p.is_dir()):
        model = model_dir.name
        for gen_file in sorted(model_dir.glob("*.jsonl")):
            bench = gen_file.stem
            rows, bad = read_jsonl_lenient(gen_file)
            out["problems"] += [f"generations/{model}/{b}" for b in bad]
            verdicts = _verdicts(ver_root / model, bench, out["problems"], model)
            per_file.append([_sample(model, bench, r, verdicts) for r in rows])
    out["samples_total"] = sum(len(f) for f in per_file)
    out["samples"] = _round_robin(per_file, cap)
    for i, s in enumerate(out["samples"]):
        s["i"] = i
    filt = out["filters"]
    filt["models"] = sorted({s["model"] for s in out["samples"]})
    filt["benchmarks"] = sorted({s["benchmark"] for s in out["samples"]})
    counts = Counter((j, v["outcome"]) for s in out["samples"] for j, v in s["verdicts"].items())
    filt["verdicts"] = [{"value": f"{j}|{o}", "label": f"{j}: {o.replace('_', ' ')} ({n})"} for (j, o), n in sorted(counts.items())]


def _verdicts(model_dir: Path, bench: str, problems: list[str], model: str) -> dict[str, dict[str, dict]]:
    """{row id: {judge: verdict row}} from ``verdicts/<model>/<bench>.<judge>.jsonl``."""
    by_id: dict[str, dict[str, dict]] = defaultdict(dict)
    if not model_dir.is_dir():
        return by_id
    for f in sorted(model_dir.glob(f"{bench}.*.jsonl")):
        judge = f.name[len(bench) + 1 : -len(".jsonl")]
        rows, bad = read_jsonl_lenient(f)
        problems += [f"verdicts/{model}/{b}" for b in bad]
        for r in rows:
            by_id[str(r.get("id"))][str(r.get("judge") or judge)] = r
    return by_id


def _text(v) -> str | None:
    return v if isinstance(v, str) else None if v is None else str(v)


def _clip(v) -> str | None:
    t = _text(v)
    if t is None or len(t) <= MAX_TEXT_CHARS:
        return t
    return t[:MAX_TEXT_CHARS] + f" … [{len(t) - MAX_TEXT_CHARS} more characters in the generations file]"


def _sample(model: str, bench: str, r: dict, verdicts: dict) -> dict:
    vs = {}
    for judge, v in sorted(verdicts.get(str(r.get("id")), {}).items()):
        verdict = v.get("verdict") if isinstance(v.get("verdict"), dict) else {}
        vs[judge] = {"outcome": outcome(v), "label": _text(verdict.get("label")), "score": verdict.get("score"),
                     "policy": _text(v.get("policy"))}
    return {
        "id": _text(r.get("id")), "model": model, "benchmark": bench, "group": _text(r.get("group")),
        "category": _text(r.get("category")), "query": _clip(r.get("query")) or "",
        "think": _clip(r.get("think")), "safe": _clip(r.get("safe")), "answer": _clip(r.get("answer")),
        "has_safe": bool(r.get("has_safe")), "issues": r.get("issues") if isinstance(r.get("issues"), list) else [],
        "tokens": {p: r.get(f"{p}_tokens") for p in ("think", "safe", "answer")},
        "finish": {"think": _text(r.get("think_finish")), "answer": _text(r.get("answer_finish"))},
        "verdicts": vs,
    }


def _round_robin(files: list[list[dict]], cap: int) -> list[dict]:
    """At most ``cap`` rows, taken in turn from every (model, benchmark) file so each one shows up."""
    if sum(len(f) for f in files) <= cap:
        return [r for f in files for r in f]
    picked: list[list[dict]] = [[] for _ in files]
    depth, total = 0, 0
    while total < cap:
        progressed = False
        for i, f in enumerate(files):
            if depth < len(f) and total < cap:
                picked[i].append(f[depth])
                total += 1
                progressed = True
        if not progressed:
            break
        depth += 1
    return [r for f in picked for r in f]  # grouped by file again, for a readable order
