"""Stage ``trigger`` (pass ②): risky queries → the model audits its own reasoning in ``<safe>``.

For every ``generate.jsonl`` row whose category is in ``trigger.categories`` (harmful and
jailbreak by default) the model is shown, as a new user turn, the safety-analysis prompt
(``prompts/safety/analysis_v1.txt``) filled with the original query and the model's own pass-①
reasoning (``think_1``). Its reply is produced in three calls, with the block *forced*:

1. ``…<think>\\n`` → reasoning ``think_2`` (budget ``trigger.thinking_budget`` or
   ``generation.thinking_budget``; stops at ``</think>``, or at ``<safe>`` should the model open
   the block inside its reasoning).
2. ``…think_2\\n</think>\\n\\n<safe>\\n`` (prefilled opener) → the analysis, stopping at
   ``</safe>`` within ``trigger.safe_budget`` tokens. Not closing it is a format failure.
3. ``…\\n</safe>\\n\\n`` → the final answer ``answer_2`` (``generation.max_new_tokens``,
   ``generation.stop``).

An attempt fails for the reasons listed in :data:`FORMAT_FAILURES` / :data:`ANSWER_FAILURES`
and, when ``trigger.require_safe_answer``, when the configured judge calls ``answer_2`` unsafe
(or cannot decide). Failed rows are resampled up to ``trigger.max_attempts`` in all: attempt 0
samples as ``generation`` says (greedy by default), retries at ``trigger.temperature`` with a
fresh seed. The row keeps the best attempt (accepted > usable answer > well-formed block >
latest) and the failure reasons of every attempt.

Writes ``trigger.jsonl`` (id = the generate row's id) and ``trigger.stats.json``. Resumable:
ids already written are skipped; rows are appended per ``generation.save_every`` chunk.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace

from safetrigger.config import TriggerConfig
from safetrigger.errors import ConfigError, DataError
from safetrigger.generation.base import GenerationBackend
from safetrigger.generation.reasoning import sampling
from safetrigger.response_format import SAFE_CLOSE, SAFE_OPEN, THINK_CLOSE, has_format_tags, parse, render
from safetrigger.runstore import RunStore
from safetrigger.statistics import percentiles

log = logging.getLogger(__name__)
STAGE = "trigger"
SOURCE_STAGE = "generate"
DEFAULT_PROMPT = "safety/analysis_v1"
NO_REASONING = "(no reasoning was written)"
RETRY_SEED_STRIDE = 1_000_003  # attempt k samples with seed generation.seed + k * stride

CLOSE_THINK_OPEN_SAFE = f"\n{THINK_CLOSE}\n\n{SAFE_OPEN}\n"
CLOSE_SAFE = f"\n{SAFE_CLOSE}"  # no trailing blank line: see generation.reasoning.CLOSE_THINK

# Failure codes of one attempt. Format failures: the <safe> block itself is unusable.
SAFE_UNCLOSED_EOS = "safe_unclosed_eos"  # the turn ended inside the block
SAFE_BUDGET_HIT = "safe_budget_hit"  # trigger.safe_budget ran out before </safe>
SAFE_EMPTY = "safe_empty"
SAFE_HAS_TAGS = "safe_has_tags"  # think/safe tags inside the analysis
THINK_HAS_TAGS = "think_has_tags"  # think_2 carries stray tags (e.g. a second <think>)
RESPONSE_MALFORMED = "response_malformed"  # assembled text does not parse back into its parts
SAFE_COPIES_PROMPT = "safe_copies_prompt"  # scaffold: a line repeats the analysis prompt's wording
SAFE_PART_SHORT = "safe_part_short"  # scaffold: a line of fewer than trigger.min_line_words words
FORMAT_FAILURES = (SAFE_UNCLOSED_EOS, SAFE_BUDGET_HIT, SAFE_EMPTY, SAFE_HAS_TAGS, THINK_HAS_TAGS, RESPONSE_MALFORMED,
                   SAFE_COPIES_PROMPT, SAFE_PART_SHORT)
# Answer failures: the block is fine, the answer after it is not usable as a target.
ANSWER_EMPTY = "answer_empty"
ANSWER_TRUNCATED = "answer_truncated"  # generation.max_new_tokens ran out
ANSWER_HAS_TAGS = "answer_has_tags"
ANSWER_FAILURES = (ANSWER_EMPTY, ANSWER_TRUNCATED, ANSWER_HAS_TAGS)
# Judge failures (only with trigger.require_safe_answer).
JUDGE_UNSAFE = "judge_unsafe"
JUDGE_UNDECIDED = "judge_undecided"




def trigger_settings(cfg) -> TriggerConfig:
    """The ``trigger`` section of ``cfg`` (defaults when absent), validated."""
    t = cfg.trigger
    if isinstance(t.max_attempts, bool) or not isinstance(t.max_attempts, int) or t.max_attempts < 1:
        raise ConfigError(f"trigger.max_attempts must be an integer >= 1, got {t.max_attempts!r}")
    if t.temperature < 0:
        raise ConfigError(f"trigger.temperature must be >= 0, got {t.temperature!r}")
    if t.safe_budget < 1 or (t.thinking_budget is not None and t.thinking_budget < 1):
        raise ConfigError("trigger.safe_budget and trigger.thinking_budget must be >= 1")
    if t.scaffold:
        scaffold_labels(t.scaffold)  # fail early on a missing or empty scaffold file
        if t.line_budget < 1:
            raise ConfigError("trigger.line_budget must be >= 1")
    if t.samples_per_part < 1 or t.answer_samples < 1:
        raise ConfigError("trigger.samples_per_part and trigger.answer_samples must be >= 1")
    if t.require_safe_answer and not t.judge:
        raise ConfigError("trigger.require_safe_answer needs trigger.judge: true (or set require_safe_answer: false)")
    if not t.categories:
        raise ConfigError("trigger.categories is empty: name the categories that get pass ② (e.g. harmful, jailbreak)")
    return t


# ---------------------------------------------------------------------------- prompt

def fill_prompt(template: str, query: str, reasoning: str | None) -> str:
    """The analysis prompt with ``{query}`` and ``{reasoning}`` filled in one pass: braces or
    slot names inside the user's text are never re-read as slots."""
    from safetrigger.prompts import fill

    return fill(template, query=query.strip(), reasoning=(reasoning or "").strip() or NO_REASONING)


def source_hash(row: dict) -> str:
    """Identity of a generate row's inputs to pass ② (query + think_1): a trigger row whose hash
    no longer matches its generate row was made from other text (build-sft drops it as stale)."""
    return hashlib.sha256(f"{row.get('query', '')}\x00{row.get('think') or ''}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- generation


@dataclass
class Attempt:
    """One try at think_2 + <safe> + answer_2 for one row."""

    index: int
    think: str = ""
    think_finish: str = ""
    think_tokens: int = 0
    safe: str = ""
    safe_finish: str = ""
    """'stop' (closed with </safe>), 'eos' or 'length' (format failure)."""
    safe_tokens: int = 0
    safe_forced: bool = False
    """The block hit trigger.safe_budget and was closed for it (trigger.close_safe_on_budget)."""
    answer: str = ""
    answer_finish: str | None = None
    """None when no answer was generated (the block failed)."""
    answer_tokens: int = 0
    prompt_tokens: int = 0
    failures: list[str] = field(default_factory=list)
    verdict: dict | None = None
    content_failure: str | None = None
    """Scaffold only: the first part line that parrots the prompt or is too short."""
    candidates: list = field(default_factory=list)
    """trigger.answer_samples > 1: every sampled answer (Completion); the judge picks one."""

    @property
    def format_ok(self) -> bool:
        return not any(f in FORMAT_FAILURES for f in self.failures)

    @property
    def answer_ok(self) -> bool:
        return self.format_ok and not any(f in ANSWER_FAILURES for f in self.failures)

    @property
    def accepted(self) -> bool:
        return not self.failures

    def response(self) -> str:
        """Canonical text of this attempt (an unclosed block stays unclosed)."""
        if self.safe_finish == "stop" or self.safe_forced:
            return render(self.think, self.answer, self.safe)
        return render(self.think, "") + f"{SAFE_OPEN}\n{self.safe.strip()}"

    def rank(self) -> tuple:
        return (self.accepted, self.answer_ok, self.format_ok, self.index)


def run_attempt(backend: GenerationBackend, prompts: list[str], index: int, gen, tcfg: TriggerConfig,
                template: str = "") -> list[Attempt]:
    """One attempt for each rendered prompt (each ends with ``<think>\\n``): the three calls,
    then the format and answer checks. Judging is left to the caller. ``template``: the analysis
    prompt, whose wording a scaffold line must not repeat (``trigger.copy_ngram``)."""
    temp = gen.temperature if index == 0 else tcfg.temperature
    seed = gen.seed + index * RETRY_SEED_STRIDE
    think_budget = tcfg.thinking_budget or gen.thinking_budget
    out = [Attempt(index) for _ in prompts]

    phase1 = backend.complete(prompts, sampling(gen, think_budget, [THINK_CLOSE, SAFE_OPEN], temp, seed), 1)
    cont = []
    for a, p, (c,) in zip(out, prompts, phase1):
        a.think, a.think_finish, a.think_tokens, a.prompt_tokens = c.text.strip(), c.finish_reason, c.completion_tokens, c.prompt_tokens
        cont.append(p + c.text.rstrip() + CLOSE_THINK_OPEN_SAFE)

    if tcfg.scaffold:
        blocks = scaffold_block(backend, cont, out, scaffold_labels(tcfg.scaffold), gen, tcfg, temp, seed, template)
    else:
        phase2 = backend.complete(cont, sampling(gen, tcfg.safe_budget, [SAFE_CLOSE], temp, seed), 1)
        blocks = [c.text.rstrip() for (c,) in phase2]
        for a, (c,) in zip(out, phase2):
            a.safe, a.safe_tokens = c.text.strip(), c.completion_tokens
            a.safe_finish = "stop" if (c.finish_reason == "stop" and c.stop_string == SAFE_CLOSE) else c.finish_reason
    closed = []
    for k, a in enumerate(out):
        # Budget forcing, as for the reasoning: weak models ramble inside the block.
        a.safe_forced = a.safe_finish == "length" and tcfg.close_safe_on_budget and bool(a.safe) and not tcfg.scaffold
        if has_format_tags(a.think):
            a.failures.append(THINK_HAS_TAGS)
        if a.safe_finish == "eos":
            a.failures.append(SAFE_UNCLOSED_EOS)
        elif a.safe_finish != "stop" and not a.safe_forced:
            a.failures.append(SAFE_BUDGET_HIT)
        elif not a.safe:
            a.failures.append(SAFE_EMPTY)
        elif has_format_tags(a.safe):
            a.failures.append(SAFE_HAS_TAGS)
        elif a.content_failure:
            a.failures.append(a.content_failure)
        if a.format_ok:
            closed.append(k)

    if closed:
        prefixes = [cont[k] + blocks[k] + CLOSE_SAFE for k in closed]
        phase3 = backend.complete(prefixes, sampling(gen, gen.max_new_tokens, list(gen.stop), temp, seed), max(1, tcfg.answer_samples))
        for k, cands in zip(closed, phase3):
            out[k].candidates = list(cands) if len(cands) > 1 else []
            set_answer(out[k], cands[0], tcfg)
    return out


def scaffold_labels(name: str) -> list[str]:
    """The part labels of a versioned scaffold file, one per non-empty line."""
    from safetrigger.prompts import load_prompt

    labels = [line.strip() for line in load_prompt(name).splitlines() if line.strip()]
    if not labels:
        raise ConfigError(f"trigger.scaffold '{name}' names no parts (one label per line)")
    return labels


def set_answer(a: Attempt, c, tcfg: TriggerConfig) -> None:
    """Take completion ``c`` as the attempt's answer and (re)run the answer checks."""
    a.failures = [f for f in a.failures if f not in ANSWER_FAILURES and f != RESPONSE_MALFORMED]
    a.answer, a.answer_finish, a.answer_tokens = c.text.strip(), c.finish_reason, c.completion_tokens
    if not a.answer:
        a.failures.append(ANSWER_EMPTY)
    elif a.answer_finish == "length" and tcfg.retry_truncated_answer:
        a.failures.append(ANSWER_TRUNCATED)
    if has_format_tags(a.answer):
        a.failures.append(ANSWER_HAS_TAGS)
    # Safety net: a usable attempt must parse back as one complete block after </think>.
    if a.answer_ok:
        parsed = parse(a.response())
        if not parsed.safe_complete or parsed.think != a.think or parsed.safe != a.safe or parsed.answer != a.answer:
            a.failures.append(RESPONSE_MALFORMED)


def pick_answers(attempts: list[Attempt], queries: list[str], ids: list[str], judge, tcfg) -> None:
    """Best of n answers: judge every usable candidate of each attempt and keep the first the
    judge finds safe (else the first usable one). Every candidate is the model's own answer."""
    from safetrigger.judges import JudgeItem

    todo = []
    for a, q, i in zip(attempts, queries, ids):
        for n, c in enumerate(a.candidates):
            probe = replace(a, candidates=[])  # set_answer replaces the answer checks' failures
            set_answer(probe, c, tcfg)
            if probe.answer_ok:
                todo.append((a, c, JudgeItem(query=q, answer=probe.answer, id=f"{i}#{n}")))
    verdicts = judge.judge([t[2] for t in todo]) if todo else []
    chosen: dict[int, tuple] = {}
    for (a, c, _), v in zip(todo, verdicts):
        if id(a) not in chosen or (chosen[id(a)][1].unsafe is not False and v.unsafe is False):
            chosen[id(a)] = (c, v)
    for a in attempts:
        if id(a) in chosen:
            set_answer(a, chosen[id(a)][0], tcfg)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def copies_text(line: str, source_ngrams: set[tuple[str, ...]], n: int) -> bool:
    """``line`` contains ``n`` consecutive words that also occur, in order, in the source."""
    w = _words(line)
    return n > 0 and any(tuple(w[i : i + n]) in source_ngrams for i in range(len(w) - n + 1))


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)} if n > 0 else set()


CONTENT_FAILURES = (SAFE_PART_SHORT, SAFE_COPIES_PROMPT)


def _line_failure(c, prompt_ngrams, tcfg) -> str | None:
    """Why one candidate line is not usable (None = usable): not ended by the model's own
    newline, empty, too short, or parroting the prompt."""
    line = c.text.strip()
    if not (c.finish_reason == "stop" and c.stop_string == "\n" and line):
        return c.finish_reason or "missing"
    if len(_words(line)) < tcfg.min_line_words:
        return SAFE_PART_SHORT
    if copies_text(line, prompt_ngrams, tcfg.copy_ngram):
        return SAFE_COPIES_PROMPT
    return None


def scaffold_block(backend, cont: list[str], out: list[Attempt], labels: list[str], gen, tcfg, temp, seed,
                   template: str = "") -> list[str]:
    """The <safe> block part by part: each label is prefilled and the model writes the rest of
    its line, stopping at the newline it writes itself. Why: a 135M model never closes a
    free-form block (every demo block was closed by force at the budget, so it never saw one it
    ended), while it does end short lines. A line that runs over ``line_budget`` or ends the
    turn fails the attempt; nothing is closed by force. Fills ``out``'s safe fields and returns
    each row's block text (to be followed by ``CLOSE_SAFE``)."""
    # A 135M model asked "Core issue: is the request harmful...?" mostly answers by copying the
    # question; such a block teaches the labels but no analysis, so it fails and is resampled.
    prompt_ngrams = ngrams(template, tcfg.copy_ngram)
    text = [""] * len(cont)
    live = list(range(len(cont)))
    for a in out:
        a.safe_finish, a.safe_tokens = "stop", 0
    k_samples = max(1, tcfg.samples_per_part)
    for n, label in enumerate(labels):
        if not live:
            break
        prefixes = [cont[k] + text[k] + label for k in live]  # no trailing space: the model writes " word" tokens
        got = backend.complete(prefixes, sampling(gen, tcfg.line_budget, ["\n", SAFE_CLOSE], temp, seed + n), k_samples)
        still = []
        for k, cands in zip(live, got):
            a = out[k]
            # Best of n per line: the first candidate the model ended itself and that says
            # something of its own (every candidate is the model's; none is edited).
            verdicts = [_line_failure(c, prompt_ngrams, tcfg) for c in cands]
            pick = next((i for i, v in enumerate(verdicts) if v is None), None)
            if pick is None:
                pick = next((i for i, v in enumerate(verdicts) if v in CONTENT_FAILURES), 0)
            c, line = cands[pick], cands[pick].text.strip()
            a.safe_tokens += c.completion_tokens
            if verdicts[pick] is None or verdicts[pick] in CONTENT_FAILURES:  # a line the model ended itself
                text[k] += f"{label} {line}" + ("\n" if n + 1 < len(labels) else "")
                still.append(k)
                if a.content_failure is None and verdicts[pick] is not None:
                    a.content_failure = verdicts[pick]
            else:
                # eos: the turn ended inside the block; length: the line never ended; a '</safe>'
                # or an empty line: the part is missing. All are format failures of the block.
                a.safe_finish = {"eos": "eos", "length": "length"}.get(c.finish_reason, "stop")
                text[k] += f"{label} {line}".rstrip()
        live = still
    done = set(live)  # rows whose every part's line the model ended itself
    for k, a in enumerate(out):
        a.safe = text[k].strip() if k in done or a.safe_finish != "stop" else ""  # "": a part is missing (safe_empty)
    return text


def trigger_responses(
    backend: GenerationBackend,
    prompts: list[str],
    queries: list[str],
    gen,
    tcfg: TriggerConfig,
    judge=None,
    ids: list[str] | None = None,
    template: str = "",
) -> list[list[Attempt]]:
    """All attempts per prompt (at most ``tcfg.max_attempts``): resample rows whose latest
    attempt failed. ``queries`` are the original user requests, for the judge; ``template`` the
    analysis prompt (see :func:`run_attempt`)."""
    from safetrigger.judges import JudgeItem

    ids = ids or [str(i) for i in range(len(prompts))]
    history: list[list[Attempt]] = [[] for _ in prompts]
    pending = list(range(len(prompts)))
    for index in range(tcfg.max_attempts):
        if not pending:
            break
        attempts = run_attempt(backend, [prompts[i] for i in pending], index, gen, tcfg, template)
        if judge is not None and tcfg.answer_samples > 1:
            pick_answers(attempts, [queries[i] for i in pending], [ids[i] for i in pending], judge, tcfg)
        if judge is not None:
            usable = [(i, a) for i, a in zip(pending, attempts) if a.answer_ok]
            verdicts = judge.judge([JudgeItem(query=queries[i], answer=a.answer, id=ids[i]) for i, a in usable])
            for (i, a), v in zip(usable, verdicts):
                a.verdict = v.to_dict()
                if tcfg.require_safe_answer and v.unsafe is not False:
                    a.failures.append(JUDGE_UNSAFE if v.unsafe else JUDGE_UNDECIDED)
        for i, a in zip(pending, attempts):
            history[i].append(a)
        pending = [i for i in pending if not history[i][-1].accepted]
        if pending and index + 1 < tcfg.max_attempts:
            log.info("%s: attempt %d: %d rows to resample", STAGE, index + 1, len(pending))
    return history


def trigger_row(src: dict, attempts: list[Attempt], pid: str) -> dict:
    """The stored row for one generate row: its best attempt plus every attempt's failures."""
    best = max(attempts, key=Attempt.rank)
    parsed = parse(best.response())
    return {
        "id": src["id"],
        "query_id": src.get("query_id"),
        "category": src.get("category"),
        "source": src.get("source"),
        "prompt_id": pid,
        "source_hash": source_hash(src),
        "think_2": best.think,
        "safe": best.safe,
        "answer_2": best.answer,
        "response_2": best.response(),
        "think2_finish": best.think_finish,
        "safe_finish": best.safe_finish,
        "safe_forced": best.safe_forced,
        "answer2_finish": best.answer_finish,
        "think2_budget_hit": best.think_finish == "length",
        "format_ok": best.format_ok,
        "answer_ok": best.answer_ok,
        "accepted": best.accepted,
        "attempts": len(attempts),
        "chosen_attempt": best.index,
        "failures": [a.failures for a in attempts],
        "judge": best.verdict,
        "issues": parsed.issues,
        "prompt_tokens": best.prompt_tokens,
        "think2_tokens": best.think_tokens,
        "safe_tokens": best.safe_tokens,
        "answer2_tokens": best.answer_tokens,
    }


# ---------------------------------------------------------------------------- stage


def run_trigger(cfg, store: RunStore, *, loaded=None, backend: GenerationBackend | None = None, judge=None) -> dict:
    """Run pass ② for the risky rows of ``generate.jsonl`` not yet in ``trigger.jsonl``.

    ``loaded`` / ``backend`` / ``judge`` replace the configured model, backend and judge
    (tests pass scripted fakes); by default they are built from ``cfg``.
    """
    from safetrigger.generation import output_settings
    from safetrigger.prompts import load_prompt, prompt_id

    tcfg = trigger_settings(cfg)
    src = store.stage(SOURCE_STAGE)
    if not src.path.is_file():
        raise DataError(f"{src.path} not found: run the generate stage first")
    template = load_prompt(tcfg.prompt)
    fill_prompt(template, "", "")  # fail early on a prompt without its slots
    pid = prompt_id(tcfg.prompt)
    gen = cfg.generation
    settings = {
        "model": asdict(cfg.model),
        "generation": output_settings(gen),
        "trigger": asdict(tcfg),
        "judge": asdict(cfg.judge) if tcfg.judge else None,
        "prompt": pid,
    }
    if judge is None and tcfg.judge:
        from safetrigger.judges.base import judge_options

        # As in score: a typo must fail before the fingerprint is recorded, or the fixed rerun is refused.
        judge_options(tcfg.answer_judge or cfg.judge.name)
    store.begin_stage(STAGE, asdict(cfg), settings)
    out = store.stage(STAGE)
    done = out.done_ids()
    rows = [r for r in src.rows() if r.get("category") in tcfg.categories]
    todo = [r for r in rows if str(r["id"]) not in done and out.owns(str(r["id"]))]  # --shard i/n: this process's share
    log.info("%s: %d risky rows, %d already done, %d to run", STAGE, len(rows), len(rows) - len(todo), len(todo))
    if todo:
        _run_rows(cfg, tcfg, store, out, todo, template, pid, loaded, backend, judge)
    stats = trigger_stats(out.rows())
    store.finish_stage(STAGE, stats)
    return stats


def _run_rows(cfg, tcfg, store, out, todo, template, pid, loaded, backend, judge) -> None:
    from safetrigger.chat_templates import render_prompt
    from safetrigger.models import system_prompt

    gen = cfg.generation
    if loaded is None:
        from safetrigger.models import load_model

        from safetrigger.generation import needs_weights

        loaded = load_model(cfg.model, weights=needs_weights(gen))
    if loaded.reasoning == "off":
        raise ConfigError("the trigger stage audits the model's reasoning: set model.reasoning to native or prompted, not off")
    if backend is None:
        from safetrigger.generation import make_backend

        backend = make_backend(loaded, gen, desc=STAGE)
    if judge is None and tcfg.judge:
        from safetrigger.judges import judge_from_config

        judge = judge_from_config(replace(cfg.judge, name=tcfg.answer_judge) if tcfg.answer_judge else cfg.judge)
    if not tcfg.judge:
        judge = None
    if tcfg.max_attempts > 1 and tcfg.temperature == 0:
        log.warning("%s: trigger.temperature is 0: retries are greedy and repeat attempt 0", STAGE)
    system = system_prompt(cfg.model, loaded.reasoning)
    store.update_stage(
        STAGE, model=loaded.identity, backend=backend.identity(), system_prompt=system, prompt_id=pid,
        judge_identity=judge.identity if judge is not None else None,
    )
    for start in range(0, len(todo), gen.save_every):
        chunk = todo[start : start + gen.save_every]
        prompts = [render_prompt(loaded.tokenizer, fill_prompt(template, r["query"], r.get("think")), system=system)
                   for r in chunk]
        history = trigger_responses(
            backend, prompts, [r["query"] for r in chunk], gen, tcfg, judge, ids=[str(r["id"]) for r in chunk],
            template=template,
        )
        written = out.append(trigger_row(r, h, pid) for r, h in zip(chunk, history))
        log.info("%s: wrote %d rows (%d/%d)", STAGE, written, start + len(chunk), len(todo))


def trigger_stats(rows: list[dict]) -> dict:
    """Counts per category, format-failure rates, attempts histogram, judge verdict rates."""
    per_cat: dict[str, Counter] = defaultdict(Counter)
    attempts_hist: Counter = Counter()
    reasons: Counter = Counter()
    labels: Counter = Counter()
    n_attempts = n_format_fail = 0
    judged = unsafe = 0
    for r in rows:
        c = per_cat[r.get("category", "?")]
        c["rows"] += 1
        c["accepted"] += bool(r.get("accepted"))
        c["format_ok"] += bool(r.get("format_ok"))
        c["answer_ok"] += bool(r.get("answer_ok"))
        c["safe_forced"] += bool(r.get("safe_forced"))
        c["retried"] += r.get("attempts", 1) > 1
        attempts_hist[str(r.get("attempts"))] += 1
        for fails in r.get("failures", []):
            n_attempts += 1
            n_format_fail += any(f in FORMAT_FAILURES for f in fails)
            reasons.update(fails)
        v = r.get("judge")
        if v is not None:
            c["judged"] += 1
            labels[v.get("label")] += 1
            judged += 1
            unsafe += v.get("unsafe") is True
            c["judged_unsafe"] += v.get("unsafe") is True
    n = len(rows)
    return {
        "rows": n,
        "per_category": {k: dict(v) for k, v in sorted(per_cat.items())},
        "accepted": sum(bool(r.get("accepted")) for r in rows),
        "format_failure_rate": {
            "rows": round(sum(not r.get("format_ok") for r in rows) / n, 4) if n else None,
            "attempts": round(n_format_fail / n_attempts, 4) if n_attempts else None,
        },
        "attempts_total": n_attempts,
        "attempts_histogram": dict(sorted(attempts_hist.items())),
        "failure_reasons": dict(reasons.most_common()),
        "judge": {
            "judged": judged,
            "unsafe_rate": round(unsafe / judged, 4) if judged else None,
            "labels": dict(labels.most_common()),
            "identities": sorted({r["judge"]["judge"] for r in rows if r.get("judge")}),
        },
        "prompt_ids": dict(Counter(r.get("prompt_id") for r in rows)),
        "think2_tokens": percentiles([r.get("think2_tokens", 0) for r in rows]),
        "safe_tokens": percentiles([r.get("safe_tokens", 0) for r in rows]),
        "answer2_tokens": percentiles([r.get("answer2_tokens", 0) for r in rows]),
    }
