"""Branching a run: a new run dir that starts from another run's finished stages.

    safetrigger branch CONFIG --from-run runs/a --at build-dpo
    safetrigger run CONFIG

A sweep over a late stage (the DPO reward, its epochs) should not redo stage 1 and sampling for
every point, and every point should still be one ordinary run dir that ``safetrigger run``
resumes, reports and compares. The branch copies the outputs of the stages before ``--at`` (in
pipeline order) into CONFIG's ``run_dir`` and writes a manifest that holds only those stages, with
the source's run dir replaced by the new one in their recorded settings (the sample stage records
the ST-S path, so a plain copy would be refused as "made with other settings"). A copied training
dir's own ``train_settings.json`` is moved the same way: DPO records the ST-S path it trained on,
and the trainer refuses a finished dir whose fingerprint differs. Nothing at or after
``--at`` is copied, so those stages run afresh under CONFIG. If CONFIG changes a setting of a
copied stage, the next ``run`` refuses and names it, exactly as for a resumed run.

Assumes: the copied stages are finished in the source (a stage still running there could be
copied half-written, so it is refused), and the new run dir is absent or empty.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from safetrigger import timestamps
from safetrigger.atomic import write_json
from safetrigger.errors import SafeTriggerError
from safetrigger.locks import LOCK_NAME
from safetrigger.runstore import RunStore, fingerprint
from safetrigger.training.runner import SETTINGS as TRAIN_SETTINGS

# What each stage writes in its run dir. ``{sft}``/``{dpo}``/``{eval}`` are the source config's
# output_subdir values; ``*`` covers shard files. tests/test_branch.py fails if a stage has no entry.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "generate": ("generate.jsonl", "generate.stats.json", "generate.shard-*"),
    "trigger": ("trigger.jsonl", "trigger.stats.json", "trigger.shard-*"),
    "build-sft": ("sft.jsonl", "sft_dropped.jsonl", "build_sft.stats.json"),
    "sft": ("{sft}", "sft.stats.json"),
    "activation": ("activation.jsonl", "activation.stats.json", "activation.shard-*"),
    "sample": ("sample.jsonl", "sample.stats.json", "sample.shard-*"),
    "score": ("score.jsonl", "score.stats.json", "score.shard-*"),
    "build-dpo": ("dpo.jsonl", "dpo_dropped.jsonl", "build_dpo.stats.json"),
    "dpo": ("{dpo}", "dpo.stats.json"),
    "eval": ("{eval}", "eval.stats.json"),
}


def _manifest_key(stage: str) -> str:
    return stage.replace("-", "_")  # the manifest spells build-sft as build_sft


def _rewrite(obj, old: str, new: str):
    """Every string equal to ``old`` or under ``old/`` now points under ``new``."""
    if isinstance(obj, dict):
        return {k: _rewrite(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, old, new) for v in obj]
    if isinstance(obj, str) and (obj == old or obj.startswith(old + "/")):
        return new + obj[len(old):]
    return obj


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def _move_train_settings(path: Path, old: str, new: str) -> None:
    """A copied training dir's settings (and so its fingerprint) name paths under the new run dir."""
    try:
        recorded = json.loads(path.read_text())
        settings = _rewrite(recorded["settings"], old, new)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SafeTriggerError(f"cannot read {path} to move its paths ({type(e).__name__}: {e}); "
                               f"branch at an earlier stage to retrain there") from e
    write_json(path, {**recorded, "settings": settings, "fingerprint": fingerprint(settings)})


def branch_run(source: str | Path, cfg, at: str) -> dict:
    """Copy the finished stages of ``source`` that come before ``at`` (in the order of
    ``safetrigger.stages.STAGES``) into ``cfg.run_dir``. Returns what was copied."""
    from dataclasses import asdict

    from safetrigger.stages import STAGES

    target = str(cfg.run_dir)

    order = list(STAGES)
    if at not in order:
        raise SafeTriggerError(f"--at {at!r} is not a stage (stages: {', '.join(order)})")
    src = RunStore(source)
    if not src.manifest_path.is_file():
        raise SafeTriggerError(f"{source} has no manifest.json: not a run dir written by `safetrigger run`")
    dst_dir = Path(target)
    if dst_dir.resolve() == src.dir.resolve():
        raise SafeTriggerError(f"the new run_dir is the source run dir ({source}); give the new config its own run_dir")
    if dst_dir.exists() and any(p.name != LOCK_NAME for p in dst_dir.iterdir()):  # the CLI holds its lock
        raise SafeTriggerError(f"{target} already exists and is not empty; branch into a new run_dir")
    manifest = src.manifest()
    recorded = manifest.get("stages", {})
    src_cfg = manifest.get("config") or {}
    old_dir = str(src_cfg.get("run_dir") or source)
    kept = [s for s in order[: order.index(at)] if _manifest_key(s) in recorded]
    unfinished = [s for s in kept if recorded[_manifest_key(s)].get("status") != "done"]
    if unfinished:
        raise SafeTriggerError(f"stage(s) {', '.join(unfinished)} are not finished in {source}; finish them there "
                               f"(safetrigger run) or branch at an earlier stage")
    subdirs = {name: (src_cfg.get(name) or {}).get("output_subdir", name) for name in ("sft", "dpo", "eval")}

    dst_dir.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    for stage in kept:
        for pattern in STAGE_OUTPUTS[stage]:
            for path in sorted(src.dir.glob(pattern.format(**subdirs))):
                _copy(path, dst_dir / path.name)
                copied.append(path.name)
                if (dst_dir / path.name / TRAIN_SETTINGS).is_file():
                    _move_train_settings(dst_dir / path.name / TRAIN_SETTINGS, old_dir, target)
    out = copy.deepcopy(manifest)
    out["config"] = asdict(cfg)  # the next stage to run records it again, with the versions and git sha
    out["stages"] = {}
    for stage in kept:
        entry = _rewrite(recorded[_manifest_key(stage)], old_dir, target)
        if "settings" in entry:  # the fingerprint is of the settings: it moves with them
            entry["fingerprint"] = fingerprint(entry["settings"])
        out["stages"][_manifest_key(stage)] = entry
    out["branched_from"] = {"run_dir": str(source), "at": at, "stages": kept,
                            "git": manifest.get("git"), "time": timestamps.now()}
    write_json(RunStore(dst_dir).manifest_path, out)
    return {"run_dir": target, "from": str(source), "at": at, "stages": kept, "files": copied}


__all__ = ["STAGE_OUTPUTS", "branch_run"]
