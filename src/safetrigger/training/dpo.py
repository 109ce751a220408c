"""Stage-2 Safe Trigger DPO: TRL ``DPOTrainer`` + LoRA on (chosen, rejected) pairs of ST-S responses.

The DPO :class:`~safetrigger.training.runner.Recipe` (the shared skeleton is ``runner.train``):
  1. reads the preference JSONL (``read_dpo_rows``): conversational ``prompt`` (system + user),
     ``chosen`` and ``rejected`` (one assistant message each), so both sides go through the same
     project chat template — identical formatting conventions by construction;
  2. measures prompt + chosen and prompt + rejected with that template, so ``max_length`` = the
     longest pair side (TRL would otherwise truncate silently);
  3. builds ``trl.DPOTrainer``: the model is ST-S (the SFT adapter merged into the base), a fresh
     LoRA adapter is trained on top, and the reference is ST-S itself (the adapter disabled),
     its log-probs precomputed once (``dpo.precompute_ref_log_probs``);
  4. checks TRL's tokenized rows: no row dropped, every completion non-empty and ending with the
     end-of-turn token, nothing truncated.
Output layout: see ``safetrigger.training.runner``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from safetrigger.config import ModelConfig
from safetrigger.errors import DataError, SafeTriggerError
from safetrigger.jsonl import read_jsonl
from safetrigger.training.config import DPOConfig
from safetrigger.training.runner import Recipe, load_for_training, train, trainer_kwargs

log = logging.getLogger(__name__)

PAIR_FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class DPOExample:
    id: str
    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]

    def as_trl(self) -> dict:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def _messages(value, where: str, field: str, roles: tuple[str, ...]) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: '{field}' must be a non-empty list of messages")
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in roles or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: every '{field}' message needs a role ({'/'.join(roles)}) and string content, got {str(m)[:80]!r}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def read_dpo_rows(path: Path) -> list[DPOExample]:
    """Rows of a preference JSONL (``id``, ``prompt``, ``chosen``, ``rejected``); a malformed row
    raises DataError naming its line and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"preference file {path} not found")
    out, seen = [], set()
    for n, row in read_jsonl(path):
        where = f"line {n} of {path}"
        missing = [f for f in PAIR_FIELDS if f not in row]
        if missing:
            raise DataError(f"{where} is missing field(s) {', '.join(missing)} (a preference row needs {', '.join(PAIR_FIELDS)})")
        prompt = _messages(row["prompt"], where, "prompt", ("system", "user"))
        if prompt[-1]["role"] != "user":
            raise DataError(f"{where}: 'prompt' must end with the user message")
        sides = []
        for field in ("chosen", "rejected"):
            msgs = _messages(row[field], where, field, ("assistant",))
            if len(msgs) != 1 or not msgs[0]["content"].strip():
                raise DataError(f"{where}: '{field}' must be exactly one non-empty assistant message")
            sides.append(msgs)
        if sides[0][0]["content"] == sides[1][0]["content"]:
            raise DataError(f"{where}: chosen and rejected are the same text (no preference to learn)")
        rid = str(row.get("id", f"line{n}"))
        if rid in seen:
            raise DataError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        out.append(DPOExample(rid, prompt, *sides))
    if not out:
        raise DataError(f"{path} holds no preference pairs")
    return out


def pair_lengths(tokenizer, examples: list[DPOExample]) -> list[int]:
    """Longer side (prompt + chosen or prompt + rejected) of each pair, in tokens, as TRL renders it."""

    def n(msgs):
        return len(tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])

    return [max(n(ex.prompt + ex.chosen), n(ex.prompt + ex.rejected)) for ex in examples]


def dpo_training_args(cfg: DPOConfig, checkpoints: Path, max_length: int, use_cpu: bool | None):
    """TRL's DPOConfig: beta, loss, precomputed reference log-probs, max_length from the data."""
    import trl

    return trl.DPOConfig(beta=cfg.beta, loss_type=cfg.loss_type, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
                         max_length=max_length, truncation_mode="keep_start", **trainer_kwargs(cfg, checkpoints, use_cpu))


def build_dpo_trainer(model_cfg: ModelConfig, cfg: DPOConfig, args, examples: list[DPOExample]):
    """ST-S on this process's device in a DPOTrainer; LoRA via peft_config (reference = adapter off)."""
    from trl import DPOTrainer

    from safetrigger.models import load_model

    loaded, peft_config = load_for_training(model_cfg, cfg, args)
    ref_model = None
    if peft_config is None and not cfg.precompute_ref_log_probs:
        ref_model = load_model(replace(model_cfg, device=str(args.device)), for_training=False).model  # full fine-tuning needs a frozen copy
    dataset = shared_dataset([ex.as_trl() for ex in examples], args)
    trainer = DPOTrainer(model=loaded.model, ref_model=ref_model, args=args, train_dataset=dataset,
                         processing_class=loaded.tokenizer, peft_config=peft_config)
    return trainer, loaded


def shared_dataset(rows: list[dict], args):
    """The pairs as one on-disk dataset under the stage's output dir, named by a hash of its
    content. Why: TRL caches precomputed reference log-probs in a file next to the dataset, keyed
    by the dataset's and the model's fingerprints. An in-memory dataset puts it in a per-process
    temp dir, which the other ranks of an ``accelerate launch`` cannot read; on disk, every rank
    shares it and a rerun on the same pairs and reference reuses it."""
    from datasets import Dataset, load_from_disk

    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    path = Path(args.output_dir).parent / "dataset" / digest
    with args.main_process_first(local=False, desc="write the DPO dataset"):
        if args.process_index == 0 and not (path / "state.json").is_file():
            Dataset.from_list(rows).save_to_disk(str(path))
    return load_from_disk(str(path))


def verify_dpo_data(trainer, examples: list[DPOExample], lengths: list[int], end_of_turn: str) -> int:
    """Check TRL's tokenized pairs; returns the number of trained (completion) tokens, both sides."""
    ds = trainer.train_dataset
    if len(ds) != len(examples):
        raise SafeTriggerError(f"TRL kept {len(ds)} of {len(examples)} DPO pairs; pairs were dropped during preparation")
    tok = trainer.processing_class
    end_ids = tok(end_of_turn, add_special_tokens=False)["input_ids"]
    total = 0
    for i, row in enumerate(ds):
        for side in ("chosen_ids", "rejected_ids"):
            ids = list(row[side])
            if not ids:
                raise SafeTriggerError(f"pair {examples[i].id!r}: TRL built an empty {side[:-4]} completion")
            if not _ends_with_turn_end(ids, end_ids):
                raise SafeTriggerError(f"pair {examples[i].id!r}: the {side[:-4]} completion does not end with {end_of_turn!r}")
            if len(row["prompt_ids"]) + len(ids) > lengths[i]:
                raise SafeTriggerError(f"pair {examples[i].id!r}: TRL tokenized more tokens than measured (template rendered differently)")
            total += len(ids)
    return total


def _ends_with_turn_end(ids: list[int], end_ids: list[int], slack: int = 2) -> bool:
    """The end-of-turn token closes the completion (templates may add a newline after it)."""
    tail = ids[-(len(end_ids) + slack):]
    return any(tail[i : i + len(end_ids)] == end_ids for i in range(len(tail) - len(end_ids) + 1))


DPO_RECIPE = Recipe("DPO", read_dpo_rows, pair_lengths, dpo_training_args, build_dpo_trainer, verify_dpo_data)


def train_dpo(dataset_path: Path, model_cfg: ModelConfig, dpo_cfg: DPOConfig, output_dir: Path, use_cpu: bool | None = None) -> dict:
    """DPO-tune ``model_cfg`` (ST-S) on the preference JSONL at ``dataset_path``; returns the train stats."""
    return train(DPO_RECIPE, dataset_path, model_cfg, dpo_cfg, output_dir, use_cpu)
