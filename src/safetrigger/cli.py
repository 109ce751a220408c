"""The ``safetrigger`` command.

    safetrigger run CONFIG [--section.key VALUE ...]     every stage in config.stages, skipping finished ones
    safetrigger <stage> CONFIG [--section.key VALUE ...] one stage (see `safetrigger --help`)
    safetrigger config CONFIG [--explain]                the resolved config / every field with its help
    safetrigger data list | show NAME                    the bundled query sets
    safetrigger model prepare [CONFIG]                   convert + cache the model (the embedded one by default)
    safetrigger judge accuracy                           the offline refusal judge against human labels

Problems the user can fix (bad config key, missing file, missing model, malformed data) end
with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from safetrigger.errors import SafeTriggerError

log = logging.getLogger("safetrigger")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML run config (e.g. configs/demo.yaml); omitted = all defaults")
    p.epilog = "Any config field can follow as an override: --section.key VALUE (see `safetrigger config --explain`)."


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split argv where config overrides start: the first ``--key`` that names a config
    field (dotted, or a top-level field such as ``--run_dir``)."""
    import dataclasses

    from safetrigger.config import RunConfig

    top = {f.name for f in dataclasses.fields(RunConfig)}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            key = a[2:].split("=", 1)[0].replace("-", "_")
            if "." in key or key in top:
                return argv[:i], argv[i:]
    return argv, []


def build_parser() -> argparse.ArgumentParser:
    from safetrigger.stages import STAGE_HELP

    parser = argparse.ArgumentParser(prog="safetrigger", description="Safe Trigger: an adaptive, explicit <safe> analysis for reasoning models.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only (for CI logs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="Run every stage listed in config.stages, skipping finished ones.")
    _config_args(p)
    for name, text in STAGE_HELP.items():
        _config_args(sub.add_parser(name, help=text))

    p = sub.add_parser("config", help="Print the resolved config (YAML), or every field with its help.")
    p.add_argument("--explain", action="store_true", help="list every field, its default and what it means")
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
    return parser


def _load(args):
    from safetrigger.config import load_config

    return load_config(args.config, args.overrides)


def cmd_stage(name: str, args) -> int:
    from safetrigger.runstore import RunStore
    from safetrigger.stages import STAGES

    cfg = _load(args)
    if args.quiet:
        cfg.generation.progress = False
    stats = STAGES[name](cfg, RunStore(cfg.run_dir))
    print(json.dumps({"stage": name, "run_dir": cfg.run_dir, "rows": stats.get("rows")}))
    return 0


def cmd_run(args) -> int:
    from safetrigger.config import ConfigError
    from safetrigger.runstore import RunStore
    from safetrigger.stages import STAGES

    cfg = _load(args)
    if args.quiet:
        cfg.generation.progress = False
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) in config.stages: {', '.join(unknown)} (available: {', '.join(STAGES)})")
    store = RunStore(cfg.run_dir)
    for name in cfg.stages:
        t0 = time.perf_counter()
        # A finished stage is re-entered anyway: it only does work for ids that are missing,
        # so a pool enlarged in the config is topped up rather than ignored.
        log.info("stage %s: %s", name, "checking (finished before)" if store.is_done(name) else "running")
        stats = STAGES[name](cfg, store)
        log.info("stage %s: done, %s rows, %.1fs", name, stats.get("rows"), time.perf_counter() - t0)
    print(f"run finished: {cfg.run_dir} (manifest: {store.manifest_path})")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    head, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(head)
    args.overrides = overrides
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")
    if not args.command:
        parser.print_help()
        return 0
    from safetrigger.stages import STAGES

    try:
        if args.command in STAGES:
            return cmd_stage(args.command, args)
        return {"run": cmd_run, "config": cmd_config, "data": cmd_data, "model": cmd_model, "judge": cmd_judge}[args.command](args)
    except SafeTriggerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished rows are saved; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
