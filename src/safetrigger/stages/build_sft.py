"""Stage ``build-sft``: assemble and filter the Safe Trigger SFT set (METHOD.md, stage 1, steps 3–4).

Targets (assistant turn, canonical :func:`~safetrigger.response_format.render` form):

* general rows → ``<think>think_1</think> answer_1``
* risky rows (``trigger.categories``) → ``<think>think_1</think> <safe>…</safe> answer_2``
  (``sft_data.think_source: think_2`` takes pass ②'s reasoning instead).

Baselines and controls (configs/baselines/) change only the risky targets:
``sft_data.safe_placement: in_think`` puts the same analysis at the end of the reasoning
(``<think>think_1\n\nanalysis</think> answer_2``), ``none`` leaves it out (``<think>think_1</think>
answer_2``, STAR-1-style); ``sft_data.risky_source: generate`` takes pass ①'s own ``think_1 +
answer_1`` and filters it as a general row (SafePath, with the ``primer`` opener in think_1).
``sft_data.star1`` appends STAR-1 rows (outside the per-category accounting; counted in
``star1``).

Every ``generate.jsonl`` row ends up either in ``sft.jsonl`` or dropped with exactly one reason
(the first that applies, in the order below); ``kept + dropped == generated`` per category is
checked in code and reported in ``build_sft.stats.json``. Dropped ids and reasons are listed in
``sft_dropped.jsonl``.

Policy (reasons in the order they are checked):

* ``general_has_safe`` — a general response that contains ``<safe>`` or ``</safe>`` anywhere.
* ``no_trigger_row`` — a risky row with no pass-② row (run the trigger stage);
  ``stale_trigger_row`` — its pass-② row was made from another query/think_1 (generate redone).
* ``think_truncated`` — only with ``sft_data.drop_think_truncated``: the reasoning used in the
  target hit the thinking budget. **Default: kept and counted** (``think_truncated_kept``):
  inference uses the same budget and closes the reasoning the same way, so the trace shape is
  one the model meets at inference; dropping would also bias the set against long reasoning (and
  with a small budget drop most of it). Raise ``generation.thinking_budget`` for real runs and
  watch the count.
* ``safe_format`` — a risky row whose ``<safe>`` block is not well formed or empty
  (after ``trigger.max_attempts`` tries).
* ``safe_forced`` — with ``sft_data.drop_safe_forced`` (default), a risky row whose block was
  closed by force at ``trigger.safe_budget``: the model never ended it, so it is not a target.
* ``answer_truncated`` — the answer used hit ``generation.max_new_tokens`` (``*_finish ==
  'length'``); a cut-off answer is not a target. Configurable (``sft_data.drop_answer_truncated``).
* ``empty_answer`` — nothing after ``</think>`` / ``</safe>``.
* ``judge_unsafe`` / ``judge_undecided`` — with ``sft_data.require_safe_verdict`` (default), a
  risky row whose answer_2 the judge found unsafe or could not decide on. Rows the trigger stage
  did not judge (``trigger.judge: false``) are kept and counted as ``unjudged_kept``.
* ``target_malformed`` — the assembled target does not parse back into exactly its parts (e.g.
  stray ``</think>`` inside an answer): training on it would teach a broken format.
* ``general_refused`` — with ``sft_data.general_judge`` set, a general row whose answer_1 that
  refusal judge calls a refusal (or off-topic): training on it would teach refusing everyday
  requests. Verdicts are counted in the stats.

Prompt side (``messages``): the *original* user query (never the pass-② analysis prompt — the
point is to trigger the audit inline) and, with ``sft_data.include_system_prompt`` (default), the
system prompt pass ① used (``manifest.stages.generate.system_prompt``, which is also what
evaluation uses via :func:`safetrigger.models.system_prompt`). Training prompt = inference prompt:
for a prompted-reasoning model that system prompt is what makes it open ``<think>``, and a
``<safe>`` habit learned under another prompt may not transfer.

The output is a deterministic function of the input files and options: it is rewritten whole
(atomically) on every run, so re-running is idempotent.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import asdict, replace

from safetrigger.config import SftDataConfig
from safetrigger.errors import ConfigError, DataError
from safetrigger.jsonl import write_jsonl
from safetrigger.response_format import ERROR_ISSUES, SAFE_CLOSE, SAFE_OPEN, parse, render
from safetrigger.runstore import RunStore
from safetrigger.stages.trigger import STAGE as TRIGGER_STAGE
from safetrigger.stages.trigger import source_hash, trigger_settings
from safetrigger.statistics import percentiles

log = logging.getLogger(__name__)
STAGE = "build_sft"
SOURCE_STAGE = "generate"
OUTPUT = "sft.jsonl"
DROPPED = "sft_dropped.jsonl"
THINK_SOURCES = ("think_1", "think_2")
SAFE_PLACEMENTS = ("block", "in_think", "none")
RISKY_SOURCES = ("trigger", "generate")
STAR1_CATEGORY = "star1"

# Drop reasons, in the order they are checked.
GENERAL_HAS_SAFE = "general_has_safe"
NO_TRIGGER_ROW = "no_trigger_row"
STALE_TRIGGER_ROW = "stale_trigger_row"
THINK_TRUNCATED = "think_truncated"
SAFE_FORMAT = "safe_format"
SAFE_FORCED = "safe_forced"
ANSWER_TRUNCATED = "answer_truncated"
EMPTY_ANSWER = "empty_answer"
JUDGE_UNSAFE = "judge_unsafe"
JUDGE_UNDECIDED = "judge_undecided"
TARGET_MALFORMED = "target_malformed"
GENERAL_REFUSED = "general_refused"
REASONS = (GENERAL_HAS_SAFE, NO_TRIGGER_ROW, STALE_TRIGGER_ROW, THINK_TRUNCATED, SAFE_FORMAT, SAFE_FORCED, ANSWER_TRUNCATED,
           EMPTY_ANSWER, JUDGE_UNSAFE, JUDGE_UNDECIDED, TARGET_MALFORMED, GENERAL_REFUSED)




def sft_settings(cfg) -> SftDataConfig:
    s = cfg.sft_data
    if s.think_source not in THINK_SOURCES:
        raise ConfigError(f"sft_data.think_source must be one of {', '.join(THINK_SOURCES)}, got {s.think_source!r}")
    for key, allowed in (("safe_placement", SAFE_PLACEMENTS), ("risky_source", RISKY_SOURCES)):
        if getattr(s, key) not in allowed:
            raise ConfigError(f"sft_data.{key} must be one of {', '.join(allowed)}, got {getattr(s, key)!r}")
    if s.star1_limit < 0:
        raise ConfigError(f"sft_data.star1_limit must be 0 (all) or more, got {s.star1_limit}")
    if s.length_unit not in ("tokens", "chars"):
        raise ConfigError(f"sft_data.length_unit must be tokens or chars, got {s.length_unit!r}")
    return s


# ---------------------------------------------------------------------------- assembly


def _roundtrip_ok(target: str, think: str | None, answer: str, safe: str | None) -> bool:
    """The target parses back into exactly (think, safe, answer) with no format errors."""
    p = parse(target)
    if set(p.issues) & ERROR_ISSUES:
        return False
    if think is None:
        if p.think is not None:
            return False
    elif not p.think_closed or p.think != think.strip():
        return False
    if p.answer != answer.strip():
        return False
    if safe is None:
        return p.safe is None and not p.safe_complete
    return p.safe_complete and p.safe == safe.strip()


def assemble(row: dict, trig: dict | None, risky: bool, opts: SftDataConfig) -> tuple[str | None, str | None, dict]:
    """``(target, None, info)`` for a kept row, ``(None, reason, info)`` for a dropped one.

    ``info`` says what was kept despite a caveat (``think_truncated``, ``unjudged``)."""
    info: dict = {}
    if risky and opts.risky_source == "generate":
        risky = False  # pass ①'s own think_1 + answer_1, filtered as a general row (SafePath)
    if not risky:
        response = row.get("response") or ""
        if SAFE_OPEN in response or SAFE_CLOSE in response:
            return None, GENERAL_HAS_SAFE, info
        think, answer, safe = row.get("think"), row.get("answer") or "", None
        think_cut = row.get("think_finish") == "length"
        answer_cut = row.get("answer_finish") == "length"
    else:
        if trig is None:
            return None, NO_TRIGGER_ROW, info
        if trig.get("source_hash") not in (None, source_hash(row)):
            return None, STALE_TRIGGER_ROW, info
        if opts.think_source == "think_2":
            think, think_cut = trig.get("think_2"), trig.get("think2_finish") == "length"
        else:
            think, think_cut = row.get("think"), row.get("think_finish") == "length"
        answer, safe = trig.get("answer_2") or "", trig.get("safe") or ""
        answer_cut = trig.get("answer2_finish") == "length"
    if think_cut:
        if opts.drop_think_truncated:
            return None, THINK_TRUNCATED, info
        info["think_truncated"] = True
    if risky and not (trig.get("format_ok") and safe.strip()):
        return None, SAFE_FORMAT, info
    if risky and trig.get("safe_forced"):
        if opts.drop_safe_forced:
            return None, SAFE_FORCED, info
        info["safe_forced"] = True  # block closed at trigger.safe_budget (budget forcing)
    if answer_cut and opts.drop_answer_truncated:
        return None, ANSWER_TRUNCATED, info
    if not answer.strip():
        return None, EMPTY_ANSWER, info
    if risky and opts.require_safe_verdict:
        v = trig.get("judge")
        if v is None:
            info["unjudged"] = True
        elif v.get("unsafe") is True:
            return None, JUDGE_UNSAFE, info
        elif v.get("unsafe") is not False:
            return None, JUDGE_UNDECIDED, info
    think, block = place_safe(think, safe if risky else None, opts.safe_placement)
    target = render(think, answer, block)
    if not _roundtrip_ok(target, think, answer, block):
        return None, TARGET_MALFORMED, info
    return target, None, info


def place_safe(think: str | None, safe: str | None, placement: str) -> tuple[str | None, str | None]:
    """(reasoning, <safe> block) of a target under ``sft_data.safe_placement``: the block as it
    is, the same analysis appended to the reasoning inside <think> (``in_think``), or dropped
    (``none``: think + answer_2, the STAR-1-style control)."""
    if safe is None or placement == "block":
        return think, safe
    if placement == "in_think":
        return "\n\n".join(t for t in ((think or "").strip(), safe.strip()) if t), None
    return think, None


def star1_rows(opts: SftDataConfig, system: str | None) -> list[dict]:
    """SFT rows from STAR-1 (``sft_data.star1``), each target ``<think>…</think> answer``."""
    from safetrigger.data.hub import load_star1

    rows = load_star1(opts.star1, limit=opts.star1_limit or None)
    return [{"id": r["id"], "query_id": r["id"], "category": STAR1_CATEGORY, "source": r["source"],
             "messages": messages_for(r["query"], render(r["think"], r["answer"]), system)} for r in rows]


def messages_for(query: str, target: str, system: str | None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": query},
        {"role": "assistant", "content": target},
    ]


# ---------------------------------------------------------------------------- stage


def _training_system_prompt(cfg, store: RunStore, family: str | None) -> str | None:
    """The system prompt pass ① generated with (as recorded in the manifest), else recomputed."""
    st = store.manifest().get("stages", {}).get(SOURCE_STAGE, {})
    if "system_prompt" in st:
        return st["system_prompt"]
    from safetrigger.models import reasoning_mode, system_prompt

    family = family or (cfg.model.template if cfg.model.template != "auto" else None)
    if family is None:
        raise DataError(
            "cannot tell which system prompt pass ① used (no manifest entry, model not loadable): "
            "run the generate stage in this run_dir or set model.template"
        )
    return system_prompt(cfg.model, reasoning_mode(cfg.model, family))


def _load_tokenizer(cfg):
    """The model's tokenizer for length stats, or (None, None) if it cannot be had cheaply."""
    from safetrigger.errors import SafeTriggerError
    from safetrigger.models import load_tokenizer

    try:
        return load_tokenizer(cfg.model)
    except SafeTriggerError as e:
        log.warning("%s: no tokenizer (%s); target lengths are reported in characters", STAGE, e)
        return None, None


def _lengths(texts: list[str], tokenizer) -> list[int]:
    if not texts:
        return []
    if tokenizer is None:
        return [len(t) for t in texts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def general_refusals(judge, rows: list[dict], targets: list[str]) -> list[dict]:
    """The refusal judge's verdict on each general row's answer (the final answer only)."""
    from safetrigger.judges import JudgeItem

    items = [JudgeItem(query=r["query"], answer=parse(t).answer or "", id=str(r["id"])) for r, t in zip(rows, targets)]
    return [v.to_dict() for v in judge.judge(items)]


def run_build_sft(cfg, store: RunStore, *, tokenizer=None, general_judge=None) -> dict:
    """Assemble ``sft.jsonl`` from ``generate.jsonl`` + ``trigger.jsonl``; returns the stats.

    ``tokenizer``: measure lengths with it (default, with ``sft_data.length_unit: tokens``: the
    configured model's tokenizer, or characters when it cannot be loaded; the unit is named in
    the stats). ``general_judge`` replaces the judge ``sft_data.general_judge`` names (tests)."""
    opts = sft_settings(cfg)
    risky_cats = set(trigger_settings(cfg).categories)
    src = store.stage(SOURCE_STAGE)
    if not src.path.is_file():
        raise DataError(f"{src.path} not found: run the generate stage first")
    store.begin_stage(STAGE, asdict(cfg), {}, extra={"options": asdict(opts)})  # a rebuild, never refused
    generated = src.rows()
    trig_file = store.stage(TRIGGER_STAGE)
    trig_rows = trig_file.rows()
    trig = {str(r["id"]): r for r in trig_rows}
    gen_ids = {str(r["id"]) for r in generated}
    orphans = sorted(set(trig) - gen_ids)

    family = None
    if opts.length_unit == "chars":
        tokenizer = None
    elif tokenizer is None:
        tokenizer, family = _load_tokenizer(cfg)
    unit = "tokens" if tokenizer is not None else "chars"
    system = _training_system_prompt(cfg, store, family) if opts.include_system_prompt else None

    kept_rows: list[dict] = []
    dropped_rows: list[dict] = []
    n_gen: Counter = Counter()
    n_kept: Counter = Counter()
    dropped: dict[str, Counter] = defaultdict(Counter)
    caveats: dict[str, Counter] = defaultdict(Counter)
    assembled = [(row, *assemble(row, trig.get(str(row["id"])), row.get("category", "?") in risky_cats, opts)) for row in generated]
    general_verdicts: Counter = Counter()
    if opts.general_judge:
        if general_judge is None:
            from safetrigger.judges import judge_from_config

            general_judge = judge_from_config(replace(cfg.judge, name=opts.general_judge))
        todo = [k for k, (row, target, _, _) in enumerate(assembled) if target is not None and row.get("category", "?") not in risky_cats]
        verdicts = general_refusals(general_judge, [assembled[k][0] for k in todo], [assembled[k][1] for k in todo])
        for k, v in zip(todo, verdicts):
            general_verdicts[v.get("label")] += 1
            if v.get("unsafe") is not True:  # refusal judges: unsafe=True means "answered" (complied)
                row, _, _, info = assembled[k]
                assembled[k] = (row, None, GENERAL_REFUSED, info)
    for row, target, reason, info in assembled:
        cat = row.get("category", "?")
        rid = str(row["id"])
        n_gen[cat] += 1
        if target is None:
            dropped[cat][reason] += 1
            dropped_rows.append({"id": rid, "category": cat, "reason": reason})
            continue
        n_kept[cat] += 1
        for k in info:
            caveats[cat][f"{k}_kept"] += 1
        kept_rows.append({
            "id": rid, "query_id": row.get("query_id"), "category": cat, "source": row.get("source"),
            "messages": messages_for(row["query"], target, system),
        })

    accounting = {}
    for cat in sorted(n_gen):
        d = sum(dropped[cat].values())
        accounting[cat] = {"generated": n_gen[cat], "kept": n_kept[cat], "dropped": d, "ok": n_kept[cat] + d == n_gen[cat]}
        if not accounting[cat]["ok"]:  # a bug in this stage, not a user error
            raise RuntimeError(f"{STAGE}: category {cat}: kept {n_kept[cat]} + dropped {d} != generated {n_gen[cat]}")
    if len(kept_rows) + len(dropped_rows) != len(generated):
        raise RuntimeError(f"{STAGE}: {len(kept_rows)} kept + {len(dropped_rows)} dropped != {len(generated)} generated")

    n_star1 = 0
    if opts.star1:  # outside the accounting above: these rows were never generated here
        extra = star1_rows(opts, system)
        kept_rows += extra
        n_star1 = len(extra)
    store.dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(store.dir / OUTPUT, kept_rows)
    write_jsonl(store.dir / DROPPED, dropped_rows)

    stats = _stats(kept_rows, generated, trig_rows, risky_cats, accounting, dropped, caveats, orphans, tokenizer, unit, system, opts)
    if opts.general_judge:
        stats["general_judge"] = {"judge": general_judge.identity, "labels": dict(general_verdicts.most_common())}
    if opts.star1:
        stats["star1"] = {"source": opts.star1, "rows": n_star1}
    truncated = sum(c.get("think_truncated_kept", 0) for c in caveats.values())
    if kept_rows and truncated / len(kept_rows) > 0.2:
        log.warning("%s: %d of %d kept targets have budget-cut reasoning: raise generation.thinking_budget "
                    "or set sft_data.drop_think_truncated", STAGE, truncated, len(kept_rows))
    if orphans:
        log.warning("%s: %d trigger rows have no generate row (ignored)", STAGE, len(orphans))
    store.update_stage(STAGE, output=OUTPUT, dropped_file=DROPPED, system_prompt=system)
    store.finish_stage(STAGE, stats)
    log.info("%s: kept %d of %d rows -> %s", STAGE, len(kept_rows), len(generated), store.dir / OUTPUT)
    return stats


def _stats(kept_rows, generated, trig_rows, risky_cats, accounting, dropped, caveats, orphans, tokenizer, unit, system, opts) -> dict:
    from safetrigger.stages.trigger import FORMAT_FAILURES

    gen_ids = {str(r["id"]) for r in generated}
    trig_in = [r for r in trig_rows if str(r["id"]) in gen_ids]
    n_trig = len(trig_in)
    attempts = [f for r in trig_in for f in r.get("failures", [])]
    verdicts = [r["judge"] for r in trig_in if r.get("judge")]
    labels = Counter(v.get("label") for v in verdicts)

    targets = {"general": [], "risky": []}
    for r in kept_rows:
        targets["risky" if r["category"] in risky_cats else "general"].append(r["messages"][-1]["content"])
    length = {"unit": unit}
    for k, texts in targets.items():
        length[k] = percentiles(_lengths(texts, tokenizer))
    length["all"] = percentiles(_lengths(targets["general"] + targets["risky"], tokenizer))
    conversation = {"unit": unit}
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        convs = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in kept_rows]
        conversation["all"] = percentiles(_lengths(convs, tokenizer))
        conversation["note"] = "full rendered training text (prompt + target + end of turn): what max_length must cover"

    return {
        "rows": len(kept_rows),
        "generated": sum(a["generated"] for a in accounting.values()),
        "kept": sum(a["kept"] for a in accounting.values()),
        "dropped": sum(a["dropped"] for a in accounting.values()),
        "accounting": accounting,
        "accounting_ok": all(a["ok"] for a in accounting.values()),
        "dropped_reasons": {cat: dict(c.most_common()) for cat, c in sorted(dropped.items())},
        "dropped_reasons_total": dict(sum(dropped.values(), Counter()).most_common()),
        "kept_with_caveats": {cat: dict(c) for cat, c in sorted(caveats.items())},
        "risky_categories": sorted(risky_cats),
        "options": asdict(opts),
        "system_prompt": system,
        "trigger": {
            "rows": n_trig,
            "orphan_rows": len(orphans),
            "format_failure_rate": {
                "rows": round(sum(not r.get("format_ok") for r in trig_in) / n_trig, 4) if n_trig else None,
                "attempts": round(sum(any(f in FORMAT_FAILURES for f in a) for a in attempts) / len(attempts), 4) if attempts else None,
            },
            "judge": {
                "judged": len(verdicts),
                "unsafe_rate": round(sum(v.get("unsafe") is True for v in verdicts) / len(verdicts), 4) if verdicts else None,
                "labels": dict(labels.most_common()),
                "identities": sorted({v.get("judge") for v in verdicts}),
            },
            "prompt_ids": sorted({r.get("prompt_id") for r in trig_in if r.get("prompt_id")}),
        },
        "target_length": length,
        "conversation_length": conversation,
    }
