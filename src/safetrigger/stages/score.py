"""Stage ``score`` (stage 2, step 2): four binary flags per sampled response.

  F_safe   the configured safety judge (``judge``) on the final answer only
  S_exist  the parser: a complete ``<safe>…</safe>`` block after ``</think>``
  T_full   yes/no rubric (``score.reasoning_rubric``) on query + reasoning
  S_full   yes/no rubric (``score.safe_rubric``) on query + ``<safe>`` analysis
The rubric questions go to ``score.rubric_model`` (default: the base model itself, as the
paper's earlier version) and are answered by P(yes) vs P(no) at the first answer token
(:mod:`safetrigger.judges.yes_no`).

Policies (each counted in ``score.stats.json``, never silent):
  * no final answer (empty after ``</think>``/``</safe>``): F_safe = 0, the judge is not asked —
    a response that says nothing must not be chosen over one that answers safely;
  * the judge cannot decide (verdict ``unsafe`` is None): F_safe = 0;
  * no reasoning text: T_full = 0, the rubric is not asked;
  * no complete block (S_exist = 0): S_full = 0, the rubric is not asked;
  * the answer was cut by the token budget: flags as usual, ``answer_truncated`` recorded
    (build-dpo decides whether such a response may be chosen).
Writes ``score.jsonl`` (one row per ``sample.jsonl`` row, same id, with the raw verdict and the
raw rubric answers) and ``score.stats.json``; resumable.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import asdict, replace

from safetrigger.config import RunConfig
from safetrigger.errors import DataError
from safetrigger.runstore import RunStore
from safetrigger.stages.sample import STAGE as SOURCE_STAGE

log = logging.getLogger(__name__)
STAGE = "score"

NO_ANSWER = "no_answer"
JUDGE_UNDECIDED = "judge_undecided"
NO_REASONING = "no_reasoning"
NO_BLOCK = "no_block"


def score_rows(rows: list[dict], judge, asker, reasoning_rubric: str, safe_rubric: str) -> list[dict]:
    """Flags + evidence for sampled rows. ``asker(questions) -> list[YesNo]`` answers rubric questions."""
    from safetrigger.judges import JudgeItem
    from safetrigger.prompts import fill

    policy: dict[str, list[str]] = defaultdict(list)
    answers = [(r.get("answer") or "").strip() for r in rows]
    to_judge = [i for i, a in enumerate(answers) if a]
    verdicts = dict(zip(to_judge, judge.judge([JudgeItem(rows[i]["query"], answers[i], str(rows[i]["id"])) for i in to_judge])))
    questions, slots = [], []  # (row index, flag)
    for i, r in enumerate(rows):
        think = (r.get("think") or "").strip()
        if think:
            questions.append(fill(reasoning_rubric, query=r["query"], reasoning=think))
            slots.append((i, "T_full"))
        else:
            policy[i].append(NO_REASONING)
        if r.get("has_safe"):
            questions.append(fill(safe_rubric, query=r["query"], analysis=(r.get("safe") or "").strip()))
            slots.append((i, "S_full"))
        else:
            policy[i].append(NO_BLOCK)
    rubric: dict[int, dict] = defaultdict(dict)
    for (i, flag), yn in zip(slots, asker(questions) if questions else []):
        rubric[i][flag] = yn.to_dict()
    out = []
    for i, r in enumerate(rows):
        v = verdicts.get(i)
        if v is None:
            policy[i].append(NO_ANSWER)
        elif v.unsafe is None:
            policy[i].append(JUDGE_UNDECIDED)
        flags = {
            "F_safe": int(v is not None and v.unsafe is False),
            "S_exist": int(bool(r.get("has_safe"))),
            "T_full": int(bool(rubric[i].get("T_full", {}).get("answer"))),
            "S_full": int(bool(rubric[i].get("S_full", {}).get("answer"))),
        }
        out.append({
            "id": r["id"], "query_id": r["query_id"], "category": r.get("category"),
            "flags": flags,
            "verdict": v.to_dict() if v is not None else None,
            "rubric": {f: rubric[i].get(f) for f in ("T_full", "S_full")},
            "policy": policy[i],
            "answer_truncated": r.get("answer_finish") == "length",
        })
    return out


def score_stats(rows: list[dict]) -> dict:
    """Flag rates (overall and per category), policy counts, judge labels."""
    n = len(rows)
    flags = Counter()
    per_cat: dict[str, Counter] = defaultdict(Counter)
    policies, labels = Counter(), Counter()
    for r in rows:
        c = per_cat[r.get("category") or "?"]
        c["rows"] += 1
        for f, v in r["flags"].items():
            flags[f] += v
            c[f] += v
        policies.update(r.get("policy", []))
        labels[(r.get("verdict") or {}).get("label", "not_judged")] += 1
    return {
        "rows": n,
        "flag_rates": {f: round(flags[f] / n, 4) if n else None for f in ("F_safe", "S_exist", "T_full", "S_full")},
        "per_category": {k: dict(v) for k, v in sorted(per_cat.items())},
        "policy_counts": dict(policies),
        "judge_labels": dict(labels),
        "answer_truncated": sum(bool(r.get("answer_truncated")) for r in rows),
    }


def run_score(cfg: RunConfig, store: RunStore, *, judge=None, asker=None) -> dict:
    """Score the ``sample.jsonl`` rows not yet in ``score.jsonl``. ``judge`` / ``asker`` replace the
    configured judge and rubric model (tests pass fakes)."""
    from safetrigger.prompts import load_prompt, prompt_id

    src = store.stage(SOURCE_STAGE)
    if not src.path.is_file():
        raise DataError(f"{src.path} not found: run the sample stage first")
    s = cfg.score
    reasoning_rubric, safe_rubric = load_prompt(s.reasoning_rubric), load_prompt(s.safe_rubric)
    judge_cfg = replace(cfg.judge, name=s.judge) if s.judge else cfg.judge
    if judge is None:
        from safetrigger.judges.base import judge_options

        # An unknown name fails here, before begin_stage records its fingerprint: recorded, it
        # would make the corrected rerun look like a change of settings and be refused.
        judge_options(judge_cfg.name)
    # score.judge enters the fingerprint as the judge it names, so run dirs made before the field
    # existed (or without it) still resume.
    settings = {"judge": asdict(judge_cfg), "score": {k: v for k, v in asdict(s).items() if k != "judge"},
                "prompts": [prompt_id(s.reasoning_rubric), prompt_id(s.safe_rubric)]}
    store.begin_stage(STAGE, asdict(cfg), settings)
    out = store.stage(STAGE)
    done = out.done_ids()
    rows = src.rows()
    todo = [r for r in rows if str(r["id"]) not in done and out.owns(str(r["id"]))]  # --shard i/n: this process's share
    log.info("%s: %d sampled responses, %d already scored, %d to score", STAGE, len(rows), len(rows) - len(todo), len(todo))
    if todo:
        if judge is None:
            from safetrigger.judges import judge_from_config

            judge = judge_from_config(judge_cfg)
        if asker is None:
            asker, rubric_identity = _rubric_asker(cfg, store)
        else:
            rubric_identity = {"scorer": "caller-supplied"}
        store.update_stage(STAGE, judge_identity=judge.identity, rubric_model=rubric_identity)
        step = cfg.generation.save_every
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            out.append(score_rows(chunk, judge, asker, reasoning_rubric, safe_rubric))
            log.info("%s: scored %d/%d", STAGE, start + len(chunk), len(todo))
    stats = score_stats(out.rows())
    store.finish_stage(STAGE, stats)
    return stats


def _rubric_asker(cfg: RunConfig, store: RunStore):
    from safetrigger.judges.yes_no import scorer_for
    from safetrigger.stages.trained import stage_model

    scorer = scorer_for(stage_model(cfg, store, cfg.score.rubric_model), cfg.generation, cfg.score.batch_size, cfg.score.threshold)
    return scorer.ask, scorer.identity
