"""The self-audit baseline (``eval.self_audit``): an inference-time two-pass, no training.

Pass 1 is the model's ordinary response. Then the same model audits the query and its own
reasoning with the versioned audit prompt (``probe.prompt``, ``audit/latent_awareness_v1``:
P(yes) vs P(no) at the first answer token, as ``safetrigger probe``). A response flagged
(score >= ``probe.threshold``) is regenerated with pass ②'s analysis — the safety-analysis
prompt of the trigger stage, one attempt with the ``trigger`` settings, no judge (there is none
at inference) — and the answer after its ``<safe>`` block replaces the first answer. When that
attempt yields no usable answer (block or answer malformed) the first response stays, counted
as ``fallback``. This is the ceiling of latent awareness at extra inference cost.

Cost: ``generated_tokens`` of every row is the sum over passes (pass-1 reasoning + answer,
plus pass-2 reasoning + block + answer when flagged); the audit itself generates no token (one
scoring forward pass, its prompt length is kept in ``audit_prompt_tokens``).

Resumable: ``<eval dir>/audit/<model>.jsonl`` holds one row per raw id (score, flag, pass-2
fields); finished ids are skipped.
"""

from __future__ import annotations

import dataclasses
import logging

from safetrigger.errors import ConfigError

log = logging.getLogger(__name__)


def audit_settings(cfg) -> dict:
    """What determines the audit's output (fingerprinted with the eval model's settings)."""
    from safetrigger.prompts import prompt_id
    from safetrigger.stages.trigger import trigger_settings

    return {"audit_prompt": prompt_id(cfg.probe.prompt), "threshold": cfg.probe.threshold,
            "analysis_prompt": prompt_id(cfg.trigger.prompt), "trigger": dataclasses.asdict(trigger_settings(cfg))}


def run_self_audit(cfg, edir, model: str, model_cfg, raw_rows: list[dict], gen) -> list[dict]:
    """Audit (and where flagged regenerate) ``raw_rows``; returns them with the final response
    of each and its token cost over all passes."""
    from safetrigger.generation import output_settings

    stage = f"audit/{model}"
    settings = {"model": dataclasses.asdict(model_cfg), "generation": output_settings(gen), **audit_settings(cfg)}
    edir.store.begin_stage(stage, dataclasses.asdict(cfg), settings)
    out = edir.store.stage(stage)
    done = out.done_ids()
    todo = [r for r in raw_rows if r["id"] not in done]
    log.info("eval: %s: self-audit of %d responses (%d done before)", model, len(todo), len(raw_rows) - len(todo))
    tools = _Tools(cfg, model_cfg, gen)
    for start in range(0, len(todo), gen.save_every):
        out.append(audit_chunk(cfg, tools, todo[start : start + gen.save_every], gen))
    audits = {r["id"]: r for r in out.rows()}
    merged = [merge(r, audits.get(r["id"])) for r in raw_rows]
    flagged = [a for a in audits.values() if a["flagged"]]
    edir.store.finish_stage(stage, {"rows": len(audits), "flagged": len(flagged),
                                    "replaced": sum(a["replaced"] for a in flagged),
                                    "fallback": sum(not a["replaced"] for a in flagged)})
    return merged


class _Tools:
    """The audit scorer and the regeneration backend, each built on first use, once per model."""

    def __init__(self, cfg, model_cfg, gen):
        self.cfg, self.model_cfg, self.gen = cfg, model_cfg, gen
        self._scorer = self._backend = None

    @property
    def scorer(self):
        if self._scorer is None:
            from safetrigger.judges.yes_no import scorer_for

            self._scorer = scorer_for(self.model_cfg, self.cfg.generation, self.cfg.probe.batch_size, self.cfg.probe.threshold)
        return self._scorer

    @property
    def backend(self):
        if self._backend is None:
            from safetrigger.generation import make_backend, needs_weights
            from safetrigger.models import load_model

            loaded = load_model(self.model_cfg, weights=needs_weights(self.gen))
            if loaded.reasoning == "off":
                raise ConfigError("eval.self_audit regenerates with the analysis of the model's reasoning: "
                                  "set model.reasoning to native or prompted, not off")
            self._backend = (loaded, make_backend(loaded, self.gen, desc="self-audit"))
        return self._backend


def audit_chunk(cfg, tools: _Tools, rows: list[dict], gen) -> list[dict]:
    """Audit rows of one chunk: scores for all, a pass-② attempt for the flagged ones."""
    from safetrigger.prompts import fill, load_prompt

    template = load_prompt(cfg.probe.prompt)
    questions = [fill(template, query=r["query"], reasoning=(r.get("think") or "").strip()) for r in rows]
    answers = tools.scorer.ask(questions)
    tok = tools.scorer.loaded.tokenizer
    audit_tokens = [len(ids) for ids in tok(questions, add_special_tokens=False)["input_ids"]] if questions else []
    flagged = [i for i, a in enumerate(answers) if a.answer]
    attempts, prompts = regenerate(cfg, tools, [rows[i] for i in flagged], gen) if flagged else ([], [])
    by = {i: (a, p) for i, a, p in zip(flagged, attempts, prompts)}
    out = []
    for i, (r, a) in enumerate(zip(rows, answers)):
        rec = {"id": r["id"], "score": a.score, "flagged": bool(a.answer), "audit_prompt_tokens": audit_tokens[i],
               "replaced": False, "pass2": None}
        if i in by:
            att, prompt = by[i]
            rec["replaced"] = att.answer_ok
            rec["pass2"] = {"prompt": prompt, "response": att.response(), "think": att.think, "safe": att.safe,
                            "answer": att.answer, "think_finish": att.think_finish, "answer_finish": att.answer_finish,
                            "think_tokens": att.think_tokens, "safe_tokens": att.safe_tokens,
                            "answer_tokens": att.answer_tokens, "prompt_tokens": att.prompt_tokens,
                            "failures": att.failures}
        out.append(rec)
    return out


def regenerate(cfg, tools: _Tools, rows: list[dict], gen):
    """One pass-② attempt per row (the trigger stage's three calls, no judge, no resampling);
    returns the attempts and the rendered prompts they continued."""
    from safetrigger.chat_templates import render_prompt
    from safetrigger.models import system_prompt
    from safetrigger.prompts import load_prompt
    from safetrigger.stages.trigger import fill_prompt, trigger_responses, trigger_settings

    tcfg = dataclasses.replace(trigger_settings(cfg), max_attempts=1, judge=False, require_safe_answer=False)
    loaded, backend = tools.backend
    system = system_prompt(tools.model_cfg, loaded.reasoning)
    template = load_prompt(tcfg.prompt)
    prompts = [render_prompt(loaded.tokenizer, fill_prompt(template, r["query"], r.get("think")), system=system) for r in rows]
    history = trigger_responses(backend, prompts, [r["query"] for r in rows], gen, tcfg, None, ids=[r["id"] for r in rows])
    return [h[-1] for h in history], prompts


def merge(raw: dict, audit: dict | None) -> dict:
    """The raw row as the user gets it after the audit, with the cost of every pass."""
    from safetrigger.response_format import parse

    first = (raw.get("think_tokens") or 0) + (raw.get("answer_tokens") or 0)
    if audit is None:
        return raw
    p2 = audit.get("pass2") or {}
    extra = sum(p2.get(k) or 0 for k in ("think_tokens", "safe_tokens", "answer_tokens"))
    row = {**raw, "generated_tokens": first + extra,
           "self_audit": {"score": audit["score"], "flagged": audit["flagged"], "replaced": audit["replaced"],
                          "fallback": audit["flagged"] and not audit["replaced"], "pass2_tokens": extra,
                          "audit_prompt_tokens": audit.get("audit_prompt_tokens")}}
    if audit["replaced"]:
        parsed = parse(p2["response"])
        row.update({"response": p2["response"], "think": parsed.think, "safe": parsed.safe, "answer": parsed.answer,
                    "has_safe": parsed.safe_complete, "issues": parsed.issues, "think_finish": p2["think_finish"],
                    "answer_finish": p2["answer_finish"], "budget_hit": p2["think_finish"] == "length",
                    "think_tokens": p2["think_tokens"], "answer_tokens": p2["safe_tokens"] + p2["answer_tokens"],
                    "prompt_text": p2["prompt"]})
    return row
