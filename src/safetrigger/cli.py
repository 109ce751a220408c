"""The ``safetrigger`` command.

    safetrigger run CONFIG [--section.key VALUE ...]     every stage in config.stages, skipping finished ones
    safetrigger branch CONFIG --from-run DIR --at STAGE  a new run dir that starts from DIR's stages before STAGE
    safetrigger <stage> CONFIG [--section.key VALUE ...] one stage (see `safetrigger --help`)
    safetrigger <stage> CONFIG --shard I/N               share I of N of a generation stage's rows (then once without: merge)
    safetrigger eval CONFIG                              models x benchmarks x judges -> <run_dir>/eval/results.md
    safetrigger probe CONFIG [--model NAME]              latent safety awareness of one eval model -> probe.json
    safetrigger config CONFIG [--explain]                the resolved config / every field with its help
    safetrigger plan CONFIG [--hardware 8xH100-80GB]     resolution, tokens, device-hours, memory, disk, commands (offline)
    safetrigger data list | show NAME                    the bundled query sets
    safetrigger model prepare [CONFIG]                   convert + cache the model (the embedded one by default)
    safetrigger judge accuracy                           the offline refusal judge against human labels
    safetrigger serve MODEL [--port 8000]                an OpenAI-compatible server on a local model
    safetrigger chat MODEL                               chat in the terminal (reasoning, <safe>, answer apart)
    safetrigger capability MODEL --tasks arc_easy,drop   lm-evaluation-harness tasks, scored on the final answer only
    safetrigger report RUN_DIR [--output PATH]           one self-contained HTML page about a run
    safetrigger compare RUN_DIR... [--out DIR]           base, ST-S, ST-D and baselines of several runs in one table

Problems the user can fix (bad config key, missing file, missing model, malformed data) end
with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time

from safetrigger.errors import SafeTriggerError

log = logging.getLogger("safetrigger")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML run config (e.g. configs/demo.yaml); omitted = all defaults")
    p.epilog = "Any config field can follow as an override: --section.key VALUE (see `safetrigger config --explain`)."


def split_overrides(argv: list[str], keep: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Split argv where config overrides start: the first ``--key`` that names a config
    field (dotted, or a top-level field such as ``--run_dir``) and is not one of the
    command's own flags (``keep``, e.g. probe's ``--model``)."""
    import dataclasses

    from safetrigger.config import RunConfig

    top = {f.name for f in dataclasses.fields(RunConfig)}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            key = a[2:].split("=", 1)[0].replace("-", "_")
            if ("." in key or key in top) and key not in keep:
                return argv[:i], argv[i:]
    return argv, []


def build_parser() -> argparse.ArgumentParser:
    from safetrigger.stages import SHARDABLE, STAGE_HELP

    parser = argparse.ArgumentParser(prog="safetrigger", description="Safe Trigger: an adaptive, explicit <safe> analysis for reasoning models.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only (for CI logs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="Run every stage listed in config.stages, skipping finished ones.")
    _config_args(p)
    p = sub.add_parser("branch", help="Start CONFIG's run_dir from another run's finished stages before --at (copied, paths moved); then `safetrigger run CONFIG` does the rest.")
    p.add_argument("--from-run", dest="from_run", required=True, metavar="DIR", help="the run dir to branch from")
    p.add_argument("--at", required=True, metavar="STAGE", help="the first stage the new run does itself, e.g. build-dpo")
    _config_args(p)
    for name, text in STAGE_HELP.items():
        ps = sub.add_parser(name, help=text)
        if name in SHARDABLE:
            ps.add_argument("--shard", metavar="I/N", help="do share I of N of the pending rows (split by a stable hash of their id) "
                            "into <stage>.shard-I-of-N.jsonl; N such processes share the work, then one run without --shard merges")
        _config_args(ps)

    p = sub.add_parser("probe", help="Latent safety awareness: the model audits its own reasoning on attacks that succeeded in eval (RISR, false alarms, AUROC).")
    p.add_argument("--model", help="name in eval.models to probe (default: probe.model)")
    _config_args(p)

    p = sub.add_parser("config", help="Print the resolved config (YAML), or every field with its help.")
    p.add_argument("--explain", action="store_true", help="list every field, its default and what it means")
    _config_args(p)

    p = sub.add_parser("plan", help="Before renting GPUs: does the config resolve (models, datasets, judges), and what will each stage cost (tokens, device-hours, memory, disk), with which commands? Offline, downloads nothing.")
    p.add_argument("--hardware", default="8xH100-80GB", help="COUNTxDEVICE, e.g. 8xH100-80GB, 4xA100-80GB, 1xcpu-2core-xeon-amx (default 8xH100-80GB)")
    p.add_argument("--run-dir", dest="from_run", help="a pilot run dir of this recipe: its measured lengths, attempts and kept shares replace the budget upper bounds")
    p.add_argument("--json", action="store_true", help="the whole plan as JSON")
    p.add_argument("--offline", action="store_true", help="do not ask the hub whether missing items exist (HF_HUB_OFFLINE does the same)")
    _config_args(p)

    p = sub.add_parser("data", help="Inspect the bundled query sets.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dsub.add_parser("list", help="Every registered set with its size.")
    ps = dsub.add_parser("show", help="A few queries of one set.")
    ps.add_argument("name")
    ps.add_argument("-n", type=int, default=5)

    p = sub.add_parser("model", help="Prepare or inspect the configured model.")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    _config_args(msub.add_parser("prepare", help="Convert (GGUF → safetensors, once) and cache the model; print where."))

    p = sub.add_parser("judge", help="Judges.")
    jsub = p.add_subparsers(dest="judge_command", metavar="ACTION", required=True)
    jsub.add_parser("accuracy", help="Accuracy of the offline refusal judge on PyRIT's human-labelled refusal rows.")
    jsub.add_parser("list", help="Available judges.")

    p = sub.add_parser("serve", help="OpenAI-compatible server (/v1/chat/completions, /v1/completions, /v1/models) on a local model.")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("SAFETRIGGER_API_KEY"), help="require 'Authorization: Bearer KEY' (default: $SAFETRIGGER_API_KEY; unset = no key)")
    p.add_argument("--served-model-name", help="model name clients send (default: MODEL as given)")

    p = sub.add_parser("chat", help="Chat with a model in the terminal: reasoning, <safe> analysis and answer shown apart.")
    _model_args(p)
    p.add_argument("--hide-reasoning", action="store_true", help="do not print the <think> reasoning")
    p.add_argument("--hide-safe", action="store_true", help="do not print the <safe> analysis")

    p = sub.add_parser("report", help="Write one self-contained HTML report of a run dir (pipeline counts, results, plots, samples).")
    p.add_argument("run_dir", help="a run dir written by `safetrigger run` (e.g. runs/demo)")
    p.add_argument("--output", help="where to write the page (default: RUN_DIR/report.html)")
    p.add_argument("--max-samples", type=int, default=2000, help="at most this many eval generations in the sample browser (default 2000)")

    p = sub.add_parser("compare", help="Put the evaluated models of several run dirs (base, ST-S, ST-D, baselines) in one table and one page; refuses runs evaluated differently.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run dirs with a finished `safetrigger eval`")
    p.add_argument("--out", help="output folder (default: <parent of the first run dir>/compare)")

    p = sub.add_parser("capability", help="General capability (ARC, WinoGrande, DROP, ...) with lm-evaluation-harness; reasoning stripped before scoring.")
    _model_args(p)
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names, e.g. arc_easy,winogrande,drop")
    p.add_argument("--limit", type=int, help="at most N examples per task (default: all)")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples per prompt (default: each task's own)")
    p.add_argument("--include-path", help="folder of extra lm-eval task YAMLs (e.g. local tasks)")
    p.add_argument("--output", help="write results.json, samples_<task>.jsonl and reasoning.jsonl to this folder")
    p.add_argument("--force-answer", action="store_true", help="score the answer after a forced </think> when the model never closes its reasoning (default: no answer, counted)")
    return parser


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="HF hub id, local directory, .gguf file, or 'embedded' (as model.name_or_path)")
    p.add_argument("--adapter", help="LoRA adapter directory to load on top (e.g. runs/demo/sft/adapter, written by the sft stage)")
    p.add_argument("--config", help="YAML run config for model/generation settings")
    p.epilog = "Config overrides come last: --section.key VALUE (e.g. --model.template chatml --generation.max_new_tokens 512)."


def _model_config(args):
    """The run config of serve/chat: --config + overrides, with MODEL and --adapter on top."""
    cfg = _load(args)
    cfg.model.name_or_path = args.model
    if args.adapter:
        cfg.model.adapter = args.adapter
    return cfg


def _load(args):
    from safetrigger.config import load_config

    return load_config(args.config, args.overrides)


def cmd_stage(name: str, args) -> int:
    from safetrigger.runstore import RunStore
    from safetrigger.stages import STAGES

    from safetrigger.runstore import Shard

    cfg = _load(args)
    if args.quiet:
        cfg.generation.progress = False
    shard = Shard.parse(getattr(args, "shard", None))
    with _writing(cfg.run_dir, shard):
        stats = STAGES[name](cfg, RunStore(cfg.run_dir, shard=shard))
    print(json.dumps({"stage": name, "run_dir": cfg.run_dir, "rows": stats.get("rows"), **({"shard": shard.label} if shard else {})}))
    _print_results(stats)
    return 0


def _writing(run_dir, shard=None):
    """The run dir's lock (one writing process at a time; see safetrigger.locks). Under
    ``accelerate launch`` only rank 0 takes it: the other ranks are the same run. A ``--shard``
    process takes its shard's own lock: the shards of one stage run side by side."""
    from contextlib import nullcontext

    from safetrigger.locks import run_dir_lock

    if os.environ.get("RANK", "0") != "0" or os.environ.get("LOCAL_RANK", "0") != "0":
        return nullcontext()
    if shard is not None:
        return run_dir_lock(run_dir, f".safetrigger.shard-{shard.index}-of-{shard.count}.lock")
    return run_dir_lock(run_dir)


def _print_results(stats: dict) -> None:
    if stats.get("results_md"):  # the eval stage
        print(f"results: {stats['results_md']}")


def cmd_probe(args) -> int:
    from safetrigger.evaluation.probe import run_probe
    from safetrigger.runstore import RunStore

    cfg = _load(args)
    if args.quiet:
        cfg.generation.progress = False
    with _writing(cfg.run_dir):
        result = run_probe(cfg, RunStore(cfg.run_dir), model=args.model)
    print(result["verdict"])
    print(f"probe: {result['path']}")
    return 0


def cmd_run(args) -> int:
    from safetrigger.config import ConfigError
    from safetrigger.stages import STAGES

    cfg = _load(args)
    if args.quiet:
        cfg.generation.progress = False
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) in config.stages: {', '.join(unknown)} (available: {', '.join(STAGES)})")
    with _writing(cfg.run_dir):
        return _run_stages(cfg)


def _run_stages(cfg) -> int:
    from safetrigger.generation import release_engines
    from safetrigger.memory import give_back
    from safetrigger.runstore import RunStore
    from safetrigger.stages import STAGES, TRAINING_STAGES

    store = RunStore(cfg.run_dir)
    stats: dict = {}
    for name in cfg.stages:
        t0 = time.perf_counter()
        if name in TRAINING_STAGES and release_engines():  # one engine per model is kept across stages until then
            log.info("stage %s: generation engine freed for training", name)
        # A finished stage is re-entered anyway: it only does work for ids that are missing,
        # so a pool enlarged in the config is topped up rather than ignored.
        log.info("stage %s: %s", name, "checking (finished before)" if store.is_done(name) else "running")
        stats = STAGES[name](cfg, store)
        if name in TRAINING_STAGES:  # its model, optimizer state and activations: not the next stage's floor
            give_back()
        log.info("stage %s: done, %s rows, %.1fs", name, stats.get("rows"), time.perf_counter() - t0)
    release_engines()
    print(f"run finished: {cfg.run_dir} (manifest: {store.manifest_path})")
    _print_results(stats if cfg.stages else {})
    try:  # the report is a view of the run: its failure must not fail the run
        from safetrigger.report import write_report

        print(f"report: {write_report(cfg.run_dir)}")
    except Exception as e:
        log.warning("report not written (%s: %s); retry with `safetrigger report %s`", type(e).__name__, e, cfg.run_dir)
    return 0


def cmd_branch(args) -> int:
    from safetrigger.branch import branch_run

    cfg = _load(args)
    with _writing(args.from_run), _writing(cfg.run_dir):  # neither run may be written meanwhile
        out = branch_run(args.from_run, cfg, args.at)
    print(json.dumps({k: out[k] for k in ("run_dir", "from", "at", "stages")}))
    # Quoted so the line can be pasted: override values such as '{st-s: sft}' hold spaces.
    command = shlex.join(["safetrigger", "run", *([args.config] if args.config else []), *args.overrides])
    print(f"next: {command} (the stages from {args.at} on run in {out['run_dir']})")
    return 0


def cmd_report(args) -> int:
    from safetrigger.config import ConfigError
    from safetrigger.report import write_report

    if args.max_samples < 0:
        raise ConfigError(f"--max-samples must be 0 or more, got {args.max_samples}")
    print(write_report(args.run_dir, args.output, max_samples=args.max_samples))
    return 0


def cmd_compare(args) -> int:
    from safetrigger.evaluation.compare_runs import run_compare

    paths = run_compare(args.run_dirs, args.out)
    print(f"results: {paths['md']}")
    print(f"report: {paths['html']}")
    return 0


def cmd_config(args) -> int:
    import dataclasses

    import yaml

    from safetrigger.config import RunConfig, explain

    if args.explain:
        sys.stdout.write("\n".join(explain(RunConfig)) + "\n")
        return 0
    print(yaml.safe_dump(dataclasses.asdict(_load(args)), sort_keys=False), end="")
    return 0


def cmd_plan(args) -> int:
    from safetrigger.plan import make_plan
    from safetrigger.plan.render import render

    plan = make_plan(_load(args), args.config or "(defaults)", args.hardware, run_dir=args.from_run, probe=not args.offline)
    print(json.dumps(plan, indent=2, default=str) if args.json else render(plan), end="" if not args.json else "\n")
    return 0


def cmd_data(args) -> int:
    from safetrigger import data

    if args.data_command == "list":
        for name, n in data.summary().items():
            print(f"{name:32s} {n:6d}")
        return 0
    for q in data.load_set(args.name)[: args.n]:
        print(json.dumps(q.to_dict(), ensure_ascii=False))
    return 0


def cmd_model(args) -> int:
    from safetrigger.models import resolve_source

    cfg = _load(args)
    print(resolve_source(cfg.model))
    return 0


def cmd_judge(args) -> int:
    from safetrigger import judges

    if args.judge_command == "list":
        print("\n".join(judges.list_judges()))
        return 0
    result = judges.refusal_judge_accuracy()
    print(json.dumps(result, indent=2))
    return 0


def cmd_serve(args) -> int:
    from safetrigger.serve import serve

    serve(_model_config(args), host=args.host, port=args.port, api_key=args.api_key, served_name=args.served_model_name)
    return 0


def cmd_chat(args) -> int:
    from safetrigger.chat import open_session, run_chat

    cfg = _model_config(args)
    cfg.generation.progress = False
    return run_chat(open_session(cfg), hide_reasoning=args.hide_reasoning, hide_safe=args.hide_safe)


def cmd_capability(args) -> int:
    from safetrigger.evaluation.lm_eval_bridge import evaluate_model

    cfg = _model_config(args)
    if args.quiet:
        cfg.generation.progress = False
    out = evaluate_model(cfg, args.tasks.split(","), limit=args.limit, num_fewshot=args.num_fewshot,
                         include_path=args.include_path, output_dir=args.output, strict_think=not args.force_answer)
    counts = {k: out["safetrigger"].get(k, 0) for k in ("generate_requests", "answered", "no_answer", "empty_answer")}
    print(json.dumps({"results": out["results"], "answers": counts, "output": args.output}, indent=2, default=str))
    return 0


def _flag_first(argv: list[str], flag: str) -> list[str]:
    """Move ``flag VALUE`` / ``flag=VALUE`` to the front of the command's own arguments (right after
    the command), so that it is not read as a config override wherever the user put it."""
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            pair, rest = argv[i : i + 2], argv[:i] + argv[i + 2 :]
        elif a.startswith(flag + "="):
            pair, rest = [a], argv[:i] + argv[i + 1 :]
        else:
            continue
        at = next((j for j, x in enumerate(rest) if not x.startswith("-")), len(rest)) + 1
        return rest[:at] + pair + rest[at:]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    argv = _flag_first(argv, "--shard")  # allowed anywhere, also after the config overrides
    keep = {"probe": ("model",), "plan": ("run_dir",), "branch": ("from_run", "at")}.get(command, ())  # the command's own flags, not config fields
    head, overrides = split_overrides(argv, keep=keep)
    args = parser.parse_args(head)
    args.overrides = overrides
    # SAFETRIGGER_QUIET=1 is -q from the environment (CI logs); either one silences every bar.
    args.quiet = args.quiet or os.environ.get("SAFETRIGGER_QUIET", "").strip().lower() not in ("", "0", "false", "no")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")  # bars we do not create (Trainer, datasets, hub)
        os.environ["SAFETRIGGER_QUIET"] = "1"  # ours, wherever they are created (safetrigger.progress)
    if not args.command:
        parser.print_help()
        return 0
    from safetrigger.stages import STAGES

    try:
        if args.command in STAGES:
            return cmd_stage(args.command, args)
        return {"run": cmd_run, "branch": cmd_branch, "config": cmd_config, "data": cmd_data, "model": cmd_model, "judge": cmd_judge,
                "serve": cmd_serve, "chat": cmd_chat, "probe": cmd_probe, "plan": cmd_plan,
                "capability": cmd_capability, "report": cmd_report, "compare": cmd_compare}[args.command](args)
    except SafeTriggerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished rows are saved; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
