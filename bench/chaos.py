"""Chaos: SIGKILL each demo stage at random moments, re-run it, check every invariant.

For each stage of the demo pipeline (generate, trigger with its judge, build-sft, sft with
merged weights, activation, sample, score, build-dpo, dpo, eval with its judge, report) on a
tiny random model (tests/tiny.py):

1. run it once uninterrupted in a reference run dir (timing it);
2. in a copy of the run dir as it was before the stage, start the real CLI and SIGKILL it:
   * aimed: at the stage's chosen moments (``AIMED``; bench/chaos_points.py arms one crash
     point per run: mid-chunk write, mid-judge batch, mid-training step, mid-checkpoint save,
     mid-merge, mid-atomic write of the manifest / stats / results / report);
   * random: ``--kills`` times at a random moment between the end of start-up and the
     reference duration;
   each run resumes what the killed ones left. When a run finishes before its kill (or without
   reaching its point), the invariants are checked on what it finished, and the next kills
   start again from a fresh copy (a point a fresh run never reaches is reported, not counted);
3. run it to completion and check the invariants:

   * ``jsonl``    every line of every JSONL in the run dir parses;
   * ``ids``      no id lost, none duplicated (the stage file's ids equal the reference's);
   * ``manifest`` the stage is ``done`` in the manifest, its row count matches the file and
                  ``<stage>.stats.json`` parses;
   * ``loads``    trained weights load (adapter on the base, merged checkpoint alone);
   * ``tmp``      no temporary file or folder is left behind (atomic writes' ``.NAME.tmpPID``,
                  ``merged.tmp``, a checkpoint cut mid-save);
   * ``equal``    outputs equal the uninterrupted run's where the stage is deterministic
                  (greedy generation and evaluation, data building); "n/a" for training and
                  the report.

    python bench/chaos.py [--stages generate,...,report] [--kills 5] [--seed 0]

Prints a table (stage x kills x invariants) and exits 1 if any invariant failed. tests/test_chaos.py
runs a fast subset in CI (the run store's writes, SIGKILLed in a child process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
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

STAGES = "generate,trigger,build-sft,sft,activation,sample,score,build-dpo,dpo,eval,report"
STAGE_FILES = {"generate": "generate.jsonl", "trigger": "trigger.jsonl", "build-sft": "sft.jsonl", "sft": None, "activation": "activation.jsonl",
               "sample": "sample.jsonl", "score": "score.jsonl", "build-dpo": "dpo.jsonl", "dpo": None, "eval": "eval/**/*.jsonl",
               "report": None}
# Greedy generation and evaluation, data building. Sampled stages (trigger's retries, sample at
# temperature 1) batch differently when resumed, so they and score (which grades the samples)
# are checked for ids, not equality.
DETERMINISTIC = {"generate": ["generate.jsonl"], "build-sft": ["sft.jsonl", "sft_dropped.jsonl"], "activation": ["activation.jsonl"],
                 "build-dpo": ["dpo.jsonl", "dpo_dropped.jsonl"], "eval": ["eval/**/*.jsonl"]}
# The chosen kill moments (bench/chaos_points.py), as (point, the how-many-th time it is reached).
AIMED = {
    "generate": [("chunk-write", 2), ("replace:manifest.json", 2), ("replace:generate.stats.json", 1)],
    "trigger": [("judge-batch", 1), ("chunk-write", 2)],
    "build-sft": [("replace:sft.jsonl", 1), ("replace:build_sft.stats.json", 1)],
    "sft": [("train-step", 3), ("checkpoint-save", 2), ("merge", 1)],
    "activation": [("chunk-write", 2)],
    "sample": [("chunk-write", 2)],
    "score": [("judge-batch", 1), ("chunk-write", 2)],
    "build-dpo": [("replace:dpo.jsonl", 1), ("replace:build_dpo.stats.json", 1)],
    "dpo": [("train-step", 2), ("checkpoint-save", 1)],
    "eval": [("chunk-write", 3), ("judge-batch", 1), ("replace:results.json", 1)],
    "report": [("replace:report.html", 1)],
}
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


def expand(run_dir: Path, pattern: str) -> list[str]:
    """The JSONL files ``pattern`` names under ``run_dir``, relative (a glob for eval's many files)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.glob(pattern) if p.is_file())


def ids_complete(run_dir: Path, ref_dir: Path, pattern: str) -> tuple[bool, str]:
    names = expand(ref_dir, pattern)
    if expand(run_dir, pattern) != names:
        return False, f"files differ: {sorted(set(expand(run_dir, pattern)) ^ set(names))}"
    for name in names:
        got, expected = ids_of(run_dir / name), ids_of(ref_dir / name)
        if len(got) != len(set(got)):
            return False, f"{name}: {len(got) - len(set(got))} duplicated ids"
        if set(got) != set(expected):
            return False, f"{name}: {len(set(expected) - set(got))} lost, {len(set(got) - set(expected))} extra"
    return True, ""


def manifest_agrees(run_dir: Path, stage: str, stage_file: str | None) -> tuple[bool, str]:
    m = json.loads((run_dir / "manifest.json").read_text())
    entry = m.get("stages", {}).get(stage, {})
    if entry.get("status") != "done":
        return False, f"manifest says {entry.get('status')!r}"
    stats = json.loads((run_dir / f"{stage}.stats.json").read_text())
    if stage_file is not None and "*" not in stage_file:
        n = len(ids_of(run_dir / stage_file))
        if entry.get("rows") != n or stats.get("rows") != n:
            return False, f"manifest rows {entry.get('rows')}, stats {stats.get('rows')}, file {n}"
    if stage == "eval":  # eval keeps its own manifest (one entry per model's raw generations)
        inner = json.loads((run_dir / "eval" / "manifest.json").read_text()).get("stages", {})
        open_ = [k for k, v in inner.items() if v.get("status") != "done"]
        if open_:
            return False, f"eval/manifest.json: {open_} not done"
        results = json.loads((run_dir / "eval" / "results.json").read_text())
        if stats.get("rows") != len(results.get("rows", [])):
            return False, f"eval.stats.json rows {stats.get('rows')}, results.json {len(results.get('rows', []))}"
    return True, ""


def _stable(row):
    if isinstance(row, dict):
        return {k: _stable(v) for k, v in row.items() if not any(w in k for w in VOLATILE)}
    if isinstance(row, list):
        return [_stable(v) for v in row]
    return row


def outputs_equal(run_dir: Path, ref_dir: Path, patterns: list[str]) -> tuple[bool, str]:
    for name in (n for p in patterns for n in expand(ref_dir, p)):
        def rows(d):
            return sorted((_stable(json.loads(x)) for x in (d / name).read_text().splitlines() if x.strip()), key=lambda r: str(r.get("id")))
        if not (run_dir / name).is_file() or rows(run_dir) != rows(ref_dir):
            return False, f"{name} differs from the uninterrupted run"
    return True, ""


def weights_load(run_dir: Path, model_dir: Path, stage: str) -> tuple[bool, str]:
    """The stage's adapter loads on its base (ST-D: base + SFT adapter + DPO adapter), and a
    merged checkpoint loads alone."""
    from safetrigger.config import ModelConfig
    from safetrigger.models import load_model

    adapters = [str(run_dir / "sft" / "adapter")] + ([str(run_dir / "dpo" / "adapter")] if stage == "dpo" else [])
    try:
        load_model(ModelConfig(name_or_path=str(model_dir), adapter=",".join(adapters), merge_adapter=stage == "dpo",
                               template="chatml", device="cpu", dtype="float32"))
        merged = run_dir / stage / "merged"
        if merged.is_dir():
            load_model(ModelConfig(name_or_path=str(merged), template="chatml", device="cpu", dtype="float32"))
    except Exception as e:  # noqa: BLE001  (the invariant reports it)
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def report_complete(run_dir: Path) -> tuple[bool, str]:
    page = run_dir / "report.html"
    text = page.read_text(encoding="utf-8") if page.is_file() else ""
    return (text.rstrip().endswith("</html>"), "" if text else "no report.html")


def no_leftovers(run_dir: Path) -> tuple[bool, str]:
    """No temporary file of an atomic write, no half-built folder, no checkpoint cut mid-save."""
    left = [p for p in run_dir.rglob("*") if (p.is_file() and TMP_FILE.search(p.name)) or (p.is_dir() and p.name.endswith(".tmp"))]
    left += [p for p in run_dir.rglob("checkpoint-*") if p.is_dir() and not (p / "trainer_state.json").is_file()]
    return (not left, ", ".join(str(p.relative_to(run_dir)) for p in left[:3]))


# ---------------------------------------------------------------------------- running stages

TMP_FILE = re.compile(r"^\..+\.tmp\d+$")
CHILD = [sys.executable, str(ROOT / "bench" / "chaos_points.py")]


def stage_argv(stage: str, run_dir: Path, model: Path) -> list[str]:
    """The stage's CLI arguments (after ``python -m safetrigger``)."""
    if stage == "report":
        return ["-q", "report", str(run_dir)]
    return ["-q", stage, "--run_dir", str(run_dir),
            "--model.name_or_path", str(model), "--model.template", "chatml", "--model.dtype", "float32", "--model.device", "cpu",
            "--generation.backend", "transformers", "--generation.batch_size", "2", "--generation.save_every", "2",
            "--generation.thinking_budget", "12", "--generation.max_new_tokens", "12", "--generation.temperature", "0",
            "--data.pool", "{'general:train': 8, 'harmful:train': 6, 'jailbreak:train': 2}", "--data.max_query_chars", "600",
            "--sft.use_lora", "true", "--sft.lora_r", "4", "--sft.lora_alpha", "8", "--sft.max_steps", "12",
            "--sft.save_steps", "2", "--sft.per_device_batch_size", "2", "--sft.save_merged", "true",
            "--dpo.lora_r", "4", "--dpo.lora_alpha", "8", "--dpo.max_steps", "6", "--dpo.save_steps", "2", "--dpo.per_device_batch_size", "2",
            # the demo's policies for a model that never closes its tags, so the judges have answers to judge
            "--trigger.max_attempts", "2", "--trigger.thinking_budget", "8", "--trigger.safe_budget", "8", "--judge.batch_size", "2",
            "--trigger.close_safe_on_budget", "true", "--trigger.retry_truncated_answer", "false", "--eval.strict_think", "false",
            "--judge.name", "refusal-keywords",
            "--activation.pool", "{'harmful:eval': 4, 'general:eval': 4}",
            "--sample.pool", "{'jailbreak:train': 4}", "--sample.num_samples", "2", "--score.batch_size", "2",
            "--reward.delta", "1.0", "--reward.chosen_must_finish", "false",
            "--eval.models", "{'base': 'base', 'st-s': 'sft'}", "--eval.benchmarks", "{'advbench': 6, 'general': 4}",
            "--eval.judges", "['refusal-keywords']", "--eval.entropy", "false"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "SAFETRIGGER_QUIET": "1"}


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "safetrigger", *args], env=env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args[1:2])} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
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


def spread_scores(run_dir: Path) -> None:
    """Give the first sample of each query every flag and the others none, so build-dpo finds a
    pair per query (a random model's own samples are all rewarded alike)."""
    from safetrigger.jsonl import write_jsonl
    from safetrigger.reward import FLAGS

    index = {str(r["id"]): r.get("sample_index", 0) for r in map(json.loads, (run_dir / "sample.jsonl").read_text().splitlines())}
    rows = [json.loads(x) for x in (run_dir / "score.jsonl").read_text().splitlines() if x.strip()]
    for r in rows:
        r["flags"] = {f: int(index[str(r["id"])] == 0) for f in FLAGS}
    write_jsonl(run_dir / "score.jsonl", rows)


def check(stage: str, target: Path, ref: Path, model: Path) -> dict:
    checks = {"jsonl": jsonl_lines_parse(target), "tmp": no_leftovers(target)}
    sf = STAGE_FILES[stage]
    if sf:
        checks["ids"] = ids_complete(target, ref, sf)
    if stage != "report":
        checks["manifest"] = manifest_agrees(target, stage.replace("-", "_"), sf)
    if stage in ("sft", "dpo"):
        checks["loads"] = weights_load(target, model, stage)
    if stage == "report":
        checks["report"] = report_complete(target)
    if stage in DETERMINISTIC:
        checks["equal"] = outputs_equal(target, ref, DETERMINISTIC[stage])
    return checks


def chaos_stage(stage: str, before: Path, ref: Path, model: Path, kills: int, rng: random.Random, work: Path, t_start: float) -> dict:
    """Aimed kills, then random ones, each run resuming the last; invariants checked whenever a
    run finishes after kills, and at the end."""
    t_ref = run(stage_argv(stage, ref, model))
    ref_s = t_ref
    target = work / f"chaos-{stage}"

    def fresh_copy():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(before, target)

    fresh_copy()
    fresh, since_fresh = True, 0  # target holds the state before the stage / kills since then
    plan = [("aimed", p, n) for p, n in AIMED.get(stage, [])] + [("random", None, None)] * kills
    random_at, aimed_at, not_reached, episodes = [], [], [], []
    attempts = 0
    while plan and attempts < 4 * len(plan) + 8:
        attempts += 1
        kind, point, n = plan[0]
        argv = [*CHILD, point, str(n), "--", *stage_argv(stage, target, model)] if kind == "aimed" else \
               [sys.executable, "-m", "safetrigger", *stage_argv(stage, target, model)]
        at = rng.uniform(min(t_start, 0.8 * t_ref), t_ref) if kind == "random" else 10 * t_ref + 120  # aimed: a hang guard
        started = time.perf_counter()
        p = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            p.wait(timeout=at)
        except subprocess.TimeoutExpired:
            if kind == "aimed":
                p.kill()
                raise SystemExit(f"{stage}: the run aimed at {point} hung")
            p.send_signal(signal.SIGKILL)
            p.wait()
        if p.returncode == -signal.SIGKILL:
            (aimed_at.append(f"{point}#{n}") if kind == "aimed" else random_at.append(round(at, 1)))
            plan.pop(0)
            fresh, since_fresh = False, since_fresh + 1
            continue
        if p.returncode != 0:
            raise SystemExit(f"{stage} failed ({p.returncode}) after a kill: {p.stderr.read().strip()[-800:]}")
        # Finished before its kill: check what the earlier kills left, start again from fresh.
        if fresh:
            if kind == "aimed":  # a fresh run never reaches this point
                not_reached.append(f"{point}#{n}")
                plan.pop(0)
            else:  # the machine got faster: aim the next kills inside this shorter run
                t_ref = min(t_ref, time.perf_counter() - started)
        if since_fresh:
            episodes.append(check(stage, target, ref, model))
        fresh_copy()
        fresh, since_fresh = True, 0
    run(stage_argv(stage, target, model))
    episodes.append(check(stage, target, ref, model))
    checks = {}
    for ep in episodes:  # an invariant holds when it held after every recovery
        for name, ok in ep.items():
            if name not in checks or (checks[name][0] and not ok[0]):
                checks[name] = ok
    return {"stage": stage, "kills": len(random_at) + len(aimed_at), "aimed": aimed_at, "not_reached": not_reached,
            "random_at_s": random_at, "recoveries_checked": len(episodes), "ref_s": round(ref_s, 1), "checks": checks}


INVARIANTS = ["jsonl", "ids", "manifest", "loads", "report", "tmp", "equal"]


def table(results: list[dict]) -> str:
    lines = ["| stage | kills (aimed + random) | aimed at | " + " | ".join(INVARIANTS) + " |", "|---" * (3 + len(INVARIANTS)) + "|"]
    for r in results:
        cells = []
        for n in INVARIANTS:
            ok = r["checks"].get(n)
            cells.append("n/a" if ok is None else "held" if ok[0] else f"FAILED ({ok[1]})")
        aimed = ", ".join(r["aimed"]) + (f"; not reached: {', '.join(r['not_reached'])}" if r["not_reached"] else "")
        lines.append(f"| {r['stage']} | {r['kills']} ({len(r['aimed'])} + {len(r['random_at_s'])}) | {aimed or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default=STAGES, help="comma-separated, in pipeline order (each needs the ones before it)")
    ap.add_argument("--kills", type=int, default=5, help="random kills per stage (the aimed ones come on top)")
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
            from safetrigger.jsonl import write_jsonl

            write_jsonl(ref / "sft.jsonl", sft_rows())
        if stage == "build-dpo":
            spread_scores(ref)
        before = work / f"before-{stage}"
        shutil.rmtree(before, ignore_errors=True)
        shutil.copytree(ref, before)
        r = chaos_stage(stage, before, ref, model, args.kills, rng, work, t_start)
        print(json.dumps(r), flush=True)
        results.append(r)
    print(table(results))
    ok = all(c[0] for r in results for c in r["checks"].values()) and all(len(r["random_at_s"]) >= args.kills for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
