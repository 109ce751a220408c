"""Stage ``build-dpo`` (stage 2, step 3): rewards, the δ filter and one (chosen, rejected) pair per query.

Reads ``sample.jsonl`` + ``score.jsonl``, computes R for every response (:mod:`safetrigger.reward`),
and per query keeps the best and the worst response when ``max R − min R ≥ reward.delta``. Every
query ends up either in ``dpo.jsonl`` or in ``dpo_dropped.jsonl`` with exactly one reason:

  ``unscored``           a sampled response has no score row (run the score stage)
  ``single_response``    fewer than two responses
  ``gap_below_delta``    all responses are rewarded (nearly) alike: no preference to learn
  ``no_finished_chosen`` (``reward.chosen_must_finish``) the gap only exists with a cut-off
                         answer as the chosen side
  ``against_block``      (``reward.no_pairs_against_block``) a risky query's best response has
                         no block and its worst one has: the pair would teach against the block
  ``general_cap``        (``reward.general_share``) a general query's pair beyond that share
  ``risky_cap``          (``reward.general_share``) a risky query's pair beyond the other share

Rows are TRL's conversational preference format: ``prompt`` (system + user, the prompt the
sample stage used), ``chosen`` / ``rejected`` (one assistant message each, the full
``<think>…</think>[<safe>…</safe>]answer`` text), so both sides use the same chat template.
Tie-break: see :func:`safetrigger.reward.choose_pair`. A rebuild is cheap and never refused.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from dataclasses import asdict

from safetrigger.config import RunConfig
from safetrigger.errors import DataError
from safetrigger.jsonl import write_jsonl
from safetrigger.reward import FLAGS, choose_pair, is_risky, response_reward, response_type
from safetrigger.runstore import RunStore
from safetrigger.stages.build_sft import messages_for
from safetrigger.stages.sample import STAGE as SAMPLE_STAGE
from safetrigger.stages.score import STAGE as SCORE_STAGE

log = logging.getLogger(__name__)
STAGE = "build_dpo"
OUTPUT = "dpo.jsonl"
DROPPED = "dpo_dropped.jsonl"


def build_pairs(samples: list[dict], scores: dict[str, dict], rcfg, system: str | None) -> tuple[list[dict], list[dict], list[float]]:
    """(pairs, dropped, every response's reward) for the sampled rows and their score rows (by id)."""
    rcfg.validate()
    by_query: dict[str, list[dict]] = defaultdict(list)
    for r in samples:
        by_query[r["query_id"]].append(r)
    pairs, dropped, all_rewards = [], [], []
    for qid, rows in by_query.items():
        rows = sorted(rows, key=lambda r: r.get("sample_index", 0))
        base = {"id": qid, "category": rows[0].get("category")}
        if any(str(r["id"]) not in scores for r in rows):
            dropped.append({**base, "reason": "unscored"})
            continue
        scored = [scores[str(r["id"])] for r in rows]
        flags = [s["flags"] for s in scored]
        rewards = [response_reward(base["category"], s, rcfg) for s in scored]
        all_rewards += rewards
        lengths = [r.get("think_tokens", 0) + r.get("answer_tokens", 0) for r in rows]
        if len(rows) < 2:
            dropped.append({**base, "reason": "single_response", "rewards": rewards})
            continue
        pair = choose_pair(rewards, lengths, rcfg.delta)
        if pair is None:
            dropped.append({**base, "reason": "gap_below_delta", "rewards": rewards})
            continue
        if rcfg.chosen_must_finish:
            finished = [i for i, r in enumerate(rows) if r.get("answer_finish") != "length"]
            sub = choose_pair([rewards[i] for i in finished] + [rewards[pair.rejected]],
                              [lengths[i] for i in finished] + [lengths[pair.rejected]], rcfg.delta) if finished else None
            if sub is None or sub.chosen == len(finished):
                dropped.append({**base, "reason": "no_finished_chosen", "rewards": rewards})
                continue
            pair.chosen, pair.gap = finished[sub.chosen], rewards[finished[sub.chosen]] - rewards[pair.rejected]
        if rcfg.no_pairs_against_block and is_risky(base["category"], qid) and not flags[pair.chosen]["S_exist"] and flags[pair.rejected]["S_exist"]:
            # "safe > unsafe+block" lowers the block's probability as much as the unsafe answer's.
            # With a keyword judge safe samples are rare, so these pairs can be most of the ones
            # with a safe side. No other rejected fits: a block-less response below a block-less
            # chosen is unsafe (R 0) and would have been the worst.
            dropped.append({**base, "reason": "against_block", "rewards": rewards})
            continue
        c, j = rows[pair.chosen], rows[pair.rejected]
        pairs.append({
            **base,
            "source": rows[0].get("source"),
            "prompt": messages_for(c["query"], "", system)[:-1],
            "chosen": [{"role": "assistant", "content": c["response"]}],
            "rejected": [{"role": "assistant", "content": j["response"]}],
            "chosen_id": c["id"], "rejected_id": j["id"],
            "chosen_reward": rewards[pair.chosen], "rejected_reward": rewards[pair.rejected],
            "chosen_flags": flags[pair.chosen], "rejected_flags": flags[pair.rejected],
            "chosen_type": response_type(base["category"], scored[pair.chosen]),
            "rejected_type": response_type(base["category"], scored[pair.rejected]),
            "rewards": rewards,
        })
    if rcfg.general_share is not None:
        pairs, cut = balance_pairs(pairs, rcfg.general_share)
        dropped += cut
    return pairs, dropped, all_rewards


def balance_pairs(pairs: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    """(kept pairs, dropped rows) with general pairs ``share`` of the kept ones, as near as whole
    pairs allow: the side over its share is cut, never padded.

    Why: general "answered > answered+block" pairs push the block away at the same gap as the
    risky pairs pull it in, and a 135M model does not tell the two kinds of prompt apart well
    enough to learn both. On dev, 56 % general pairs lost the block everywhere (M″) and 25 %
    spread it to general prompts (M‴). Which pairs stay is decided by a hash of the query id, so
    it depends neither on the pool's order nor on Python's hash seed.
    """
    risky = [p for p in pairs if is_risky(p["category"], p["id"])]
    general = [p for p in pairs if not is_risky(p["category"], p["id"])]
    if len(general) * (1 - share) > len(risky) * share:  # too many general pairs
        side, keep_n, reason = general, int(len(risky) * share / (1 - share)), "general_cap"
    else:
        side, keep_n, reason = risky, int(len(general) * (1 - share) / share), "risky_cap"
    keep = {p["id"] for p in sorted(side, key=lambda p: hashlib.sha1(str(p["id"]).encode()).hexdigest())[:keep_n]}
    cut = [p for p in side if p["id"] not in keep]
    cut_ids = {p["id"] for p in cut}
    return ([p for p in pairs if p["id"] not in cut_ids],
            [{"id": p["id"], "category": p["category"], "reason": reason, "rewards": p["rewards"]} for p in cut])


def run_build_dpo(cfg: RunConfig, store: RunStore) -> dict:
    samples_file, scores_file = store.stage(SAMPLE_STAGE), store.stage(SCORE_STAGE)
    for f, stage in ((samples_file, "sample"), (scores_file, "score")):
        if not f.path.is_file():
            raise DataError(f"{f.path} not found: run the {stage} stage first")
    cfg.reward.validate()
    store.begin_stage(STAGE, asdict(cfg), {}, extra={"options": asdict(cfg.reward)})  # a rebuild, never refused
    samples = samples_file.rows()
    scores = {str(r["id"]): r for r in scores_file.rows()}
    system = store.manifest().get("stages", {}).get(SAMPLE_STAGE, {}).get("system_prompt") if cfg.reward.include_system_prompt else None
    pairs, dropped, all_rewards = build_pairs(samples, scores, cfg.reward, system)
    queries = len({r["query_id"] for r in samples})
    if len(pairs) + len(dropped) != queries:  # every query accounted for exactly once
        raise RuntimeError(f"{STAGE}: {len(pairs)} kept + {len(dropped)} dropped != {queries} queries")
    write_jsonl(store.dir / OUTPUT, pairs)
    write_jsonl(store.dir / DROPPED, dropped)
    stats = dpo_data_stats(pairs, dropped, all_rewards, scores, queries)
    store.update_stage(STAGE, output=OUTPUT, dropped_file=DROPPED, system_prompt=system)
    store.finish_stage(STAGE, stats)
    log.info("%s: kept %d of %d queries -> %s", STAGE, len(pairs), queries, store.dir / OUTPUT)
    return stats


def dpo_data_stats(pairs, dropped, all_rewards, scores, queries: int) -> dict:
    hist = Counter(all_rewards)
    flag_n = Counter()
    for s in scores.values():
        for f in FLAGS:
            flag_n[f] += s["flags"][f]
    n = len(scores)
    return {
        "queries": queries,
        "rows": len(pairs),
        "kept": len(pairs),
        "dropped": len(dropped),
        "dropped_reasons": dict(Counter(d["reason"] for d in dropped).most_common()),
        "reward_histogram": {str(k): hist[k] for k in sorted(hist)},
        "flag_rates": {f: round(flag_n[f] / n, 4) if n else None for f in FLAGS},
        "pair_gap": dict(Counter(str(p["chosen_reward"] - p["rejected_reward"]) for p in pairs)),
        "chosen_with_safe": sum(p["chosen_flags"]["S_exist"] for p in pairs),
        "rejected_with_safe": sum(p["rejected_flags"]["S_exist"] for p in pairs),
        # What DPO is taught to prefer. "safe+block > unsafe" is the contrast the reward is for;
        # "safe > unsafe+block" pairs push against the block itself and are worth watching.
        "pair_types": dict(Counter(f"{p['chosen_type']} > {p['rejected_type']}" for p in pairs).most_common()),
        "pairs_per_category": dict(Counter(p["category"] for p in pairs).most_common()),
    }
