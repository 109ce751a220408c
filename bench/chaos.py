"""Chaos: SIGKILL each demo stage at random moments, re-run it, check every invariant.

For each stage (default: generate, trigger with its judge, build-sft, sft with merged weights,
activation, sample, score, report) on a tiny random
model (tests/tiny.py):

1. run it once uninterrupted in a reference run dir (timing it);
2. in a copy of the run dir as it was before the stage, start the real CLI
   (``python -m safetrigger <stage> ...``) and SIGKILL it at a random moment between the end
   of start-up and the reference duration, ``--kills`` times (a run that finishes before its
   kill is not counted and is retried on a fresh copy);
3. run it to completion and check the invariants:

   * ``jsonl``    every line of every JSONL in the run dir parses;
   * ``ids``      no id lost, none duplicated (the stage file's ids equal the reference's);
   * ``manifest`` the stage is ``done`` in the manifest, its row count matches the file and
                  ``<stage>.stats.json`` parses;
   * ``loads``    trained weights load (adapter on the base, merged checkpoint alone);
   * ``equal``    outputs equal the uninterrupted run's where the stage is deterministic
                  (greedy generation, data building); "n/a" for training and the report.

    python bench/chaos.py [--stages generate,trigger,build-sft,sft,activation,sample,score,report] [--kills 5] [--seed 0]

Prints a table (stage x kills x invariants) and exits 1 if any invariant failed. tests/test_chaos.py
runs a fast subset in CI (the run store's writes, SIGKILLed in a child process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

STAGE_FILES = {"generate": "generate.jsonl", "trigger": "trigger.jsonl", "build-sft": "sft.jsonl", "sft": None, "activation": "activation.jsonl",
               "sample": "sample.jsonl", "score": "score.jsonl", "report": None}
# Greedy generation and data building. Sampled stages (trigger's retries, sample at temperature
# 1) batch differently when resumed, so they and score (which grades the samples) are checked
# for ids, not equality.
DETERMINISTIC = {"generate": ["generate.jsonl"], "build-sft": ["sft.jsonl", "sft_dropped.jsonl"], "activation": ["activation.jsonl"]}
VOLATILE = ("seconds", "time", "latency", "started", "finished", "created")
ASSISTANT = "<think>\nLet me think step by step about the request.\n</think>\n\n<safe>\nCore issue: the request asks for harmful instructions.\n</safe>\n\nI can't help with that, but here is a safer alternative."


# ---------------------------------------------------------------------------- invariants


def jsonl_lines_parse(run_dir: Path) -> tuple[bool, str]:
    for f in sorted(run_dir.rglob("*.jsonl")):
        data = f.read_bytes()
        if data and not data.endswith(b"\n"):
            return False, f"{f.name}: torn last line"
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    return False, f"{f.name}:{n} does not parse"
    return True, ""


def ids_of(path: Path) -> list[str]:
    return [str(json.loads(x)["id"]) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def ids_complete(path: Path, expected: list[str]) -> tuple[bool, str]:
    got = ids_of(path)
    if len(got) != len(set(got)):
        return False, f"{len(got) - len(set(got))} duplicated ids"
    if set(got) != set(expected):
        return False, f"{len(set(expected) - set(got))} lost, {len(set(got) - set(expected))} extra"
    return True, ""


def manifest_agrees(run_dir: Path, stage: str, stage_file: str | None) -> tuple[bool, str]:
    m = json.loads((run_dir / "manifest.json").read_text())
    entry = m.get("stages", {}).get(stage, {})
    if entry.get("status") != "done":
        return False, f"manifest says {entry.get('status')!r}"
    stats = json.loads((run_dir / f"{stage}.stats.json").read_text())
    if stage_file is not None:
        n = len(ids_of(run_dir / stage_file))
        if entry.get("rows") != n or stats.get("rows") != n:
            return False, f"manifest rows {entry.get('rows')}, stats {stats.get('rows')}, file {n}"
    return True, ""


def _stable(row):
    if isinstance(row, dict):
        return {k: _stable(v) for k, v in row.items() if not any(w in k for w in VOLATILE)}
    if isinstance(row, list):
        return [_stable(v) for v in row]
    return row


def outputs_equal(run_dir: Path, ref_dir: Path, files: list[str]) -> tuple[bool, str]:
    for name in files:
        def rows(d):
            return sorted((_stable(json.loads(x)) for x in (d / name).read_text().splitlines() if x.strip()), key=lambda r: str(r.get("id")))
        if rows(run_dir) != rows(ref_dir):
            return False, f"{name} differs from the uninterrupted run"
    return True, ""


def weights_load(run_dir: Path, model_dir: Path) -> tuple[bool, str]:
    from safetrigger.config import ModelConfig
    from safetrigger.models import load_model

    try:
        load_model(ModelConfig(name_or_path=str(model_dir), adapter=str(run_dir / "sft" / "adapter"), template="chatml", device="cpu", dtype="float32"))
        merged = run_dir / "sft" / "merged"
        if merged.is_dir():
            load_model(ModelConfig(name_or_path=str(merged), template="chatml", device="cpu", dtype="float32"))
    except Exception as e:  # noqa: BLE001  (the invariant reports it)
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def report_complete(run_dir: Path) -> tuple[bool, str]:
    page = run_dir / "report.html"
    text = page.read_text(encoding="utf-8") if page.is_file() else ""
    return (text.rstrip().endswith("</html>"), "" if text else "no report.html")


# ---------------------------------------------------------------------------- running stages


def stage_argv(stage: str, run_dir: Path, model: Path) -> list[str]:
    if stage == "report":
        return [sys.executable, "-m", "safetrigger", "-q", "report", str(run_dir)]
    return [sys.executable, "-m", "safetrigger", "-q", stage, "--run_dir", str(run_dir),
            "--model.name_or_path", str(model), "--model.template", "chatml", "--model.dtype", "float32", "--model.device", "cpu",
            "--generation.backend", "transformers", "--generation.batch_size", "2", "--generation.save_every", "2",
            "--generation.thinking_budget", "12", "--generation.max_new_tokens", "12", "--generation.temperature", "0",
            "--data.pool", "{'general:train': 8, 'harmful:train': 6, 'jailbreak:train': 2}", "--data.max_query_chars", "600",
            "--sft.use_lora", "true", "--sft.lora_r", "4", "--sft.lora_alpha", "8", "--sft.max_steps", "12",
            "--sft.save_steps", "2", "--sft.per_device_batch_size", "2", "--sft.save_merged", "true",
            "--trigger.max_attempts", "2", "--trigger.thinking_budget", "8", "--trigger.safe_budget", "8", "--judge.batch_size", "2",
            "--activation.pool", "{'harmful:eval': 4, 'general:eval': 4}",
            "--sample.pool", "{'jailbreak:train': 4}", "--sample.num_samples", "2", "--score.batch_size", "2"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "SAFETRIGGER_QUIET": "1"}


def run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv[3:5])} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return time.perf_counter() - t0


def startup_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import safetrigger.cli, torch, transformers"], env=env(), check=True)
    return time.perf_counter() - t0


def sft_rows(n: int = 16) -> list[dict]:
    """A small SFT set (a random model's own rows rarely survive build-sft's filters)."""
    return [{"id": f"row-{i}", "category": "harmful" if i % 2 else "general",
             "messages": [{"role": "user", "content": f"Question {i}: how do I bake bread?"}, {"role": "assistant", "content": ASSISTANT}]}
            for i in range(n)]


def chaos_stage(stage: str, before: Path, ref: Path, model: Path, kills: int, rng: random.Random, work: Path, t_start: float) -> dict:
    argv_ref = stage_argv(stage, ref, model)
    t_ref = run(argv_ref)
    ref_s = t_ref
    done_kills, attempts, moments = 0, 0, []
    target = work / f"chaos-{stage}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(before, target)
    fresh = True  # target holds the state before the stage (nothing of it done yet)
    while done_kills < kills and attempts < 4 * kills:
        attempts += 1
        at = rng.uniform(min(t_start, 0.8 * t_ref), t_ref)
        started = time.perf_counter()
        p = subprocess.Popen(stage_argv(stage, target, model), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            p.wait(timeout=at)
            if p.returncode != 0:
                raise SystemExit(f"{stage} failed ({p.returncode}) after a kill: {p.stderr.read().strip()[-800:]}")
            # Finished before its kill. From a fresh state that means the machine got faster:
            # aim the next kills inside this shorter run (a resumed run is short by design).
            if fresh:
                t_ref = min(t_ref, time.perf_counter() - started)
            shutil.rmtree(target)
            shutil.copytree(before, target)
            fresh = True
        except subprocess.TimeoutExpired:
            fresh = False
            p.send_signal(signal.SIGKILL)
            p.wait()
            done_kills += 1
            moments.append(round(at, 1))
    run(stage_argv(stage, target, model))
    checks = {"jsonl": jsonl_lines_parse(target)}
    sf = STAGE_FILES[stage]
    if sf:
        checks["ids"] = ids_complete(target / sf, ids_of(ref / sf))
    if stage != "report":
        checks["manifest"] = manifest_agrees(target, stage.replace("-", "_"), sf)
    if stage == "sft":
        checks["loads"] = weights_load(target, model)
    if stage == "report":
        checks["report"] = report_complete(target)
    if stage in DETERMINISTIC:
        checks["equal"] = outputs_equal(target, ref, DETERMINISTIC[stage])
    return {"stage": stage, "kills": done_kills, "kill_at_s": moments, "ref_s": round(ref_s, 1), "checks": checks}


def table(results: list[dict]) -> str:
    names = ["jsonl", "ids", "manifest", "loads", "report", "equal"]
    lines = ["| stage | kills | " + " | ".join(names) + " |", "|---" * (2 + len(names)) + "|"]
    for r in results:
        cells = []
        for n in names:
            ok = r["checks"].get(n)
            cells.append("n/a" if ok is None else "held" if ok[0] else f"FAILED ({ok[1]})")
        lines.append(f"| {r['stage']} | {r['kills']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="generate,trigger,build-sft,sft,activation,sample,score,report")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    args = ap.parse_args()
    from tiny import save_tiny

    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="chaos-"))
    model = save_tiny(work / "tiny") if not (work / "tiny" / "config.json").is_file() else work / "tiny"
    ref = work / "ref"
    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir(parents=True)
    t_start = startup_seconds()
    results = []
    for stage in args.stages.split(","):
        if stage == "sft":  # the SFT set, in place of build-sft's (a random model's rows are filtered out)
            with open(ref / "sft.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in sft_rows())
        before = work / f"before-{stage}"
        shutil.rmtree(before, ignore_errors=True)
        shutil.copytree(ref, before)
        r = chaos_stage(stage, before, ref, model, args.kills, rng, work, t_start)
        print(json.dumps(r), flush=True)
        results.append(r)
    print(table(results))
    ok = all(c[0] for r in results for c in r["checks"].values()) and all(r["kills"] >= args.kills for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
