"""General capability (ARC, WinoGrande, DROP, …) through EleutherAI's lm-evaluation-harness, with
the reasoning stripped before scoring.

    safetrigger capability MODEL --tasks arc_easy,winogrande,drop --limit 100 --output runs/cap

How a reasoning model meets lm-eval's three request types (`ReasoningLM`):

- ``generate_until`` (DROP, GSM8K-style tasks): the task's prompt text becomes one user message
  in the project's chat template; the model reasons (the two-phase protocol of
  `generation.reasoning`, bounded by ``generation.thinking_budget``) and only the final answer
  (`response_format.parse` → ``answer``; a ``<safe>`` block goes too) is returned, cut at the
  task's ``until`` strings. A reply whose reasoning the model never closed itself (budget hit,
  or the turn ended inside ``<think>``) gets an empty answer and is counted as ``no_answer``;
  ``strict_think=False`` scores the answer written after a forced close instead. The answer
  budget is ``generation.max_new_tokens`` and sampling follows ``generation.*``, not the task's
  ``max_gen_toks``/``do_sample`` (those are sized for models that answer directly).
- ``loglikelihood`` / ``loglikelihood_rolling`` (ARC, WinoGrande, other multiple choice): lm-eval's
  own HF scoring (HFLM) of the plain continuation given the plain context: no chat template, no
  reasoning, since these tasks rank fixed options and never read generated text.

lm-eval is an optional extra (``pip install 'safetrigger[capability]'``); task data comes from
the Hugging Face hub on first use (then its cache), so offline runs need a warm cache or
local tasks (``include_path``: a folder of task YAMLs, e.g. with ``dataset_path: json``).
"""

from __future__ import annotations

import difflib
import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError, DataError
from ..response_format import parse

GenerateFn = Callable[[list[str]], list[str]]
"""Rendered prompts in, raw completions out (the text after each prompt, reasoning included)."""
INSTALL = "pip install 'safetrigger[capability]'  (or: pip install 'lm-eval>=0.4')"


def _require_lm_eval():
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise ConfigError(f"the capability command needs EleutherAI's lm-evaluation-harness ({e.name} missing): {INSTALL}") from None
    return HFLM


def cut_at_stops(text: str, until: Any) -> str:
    """``text`` up to the first of lm-eval's ``until`` strings (as lm-eval does for plain models)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
    return text[:cut].strip()


def default_generator(loaded, gen, strict_think: bool = True) -> GenerateFn:
    """The configured backend with the project's reasoning protocol. With ``strict_think``, a
    reasoning the model did not close is returned unclosed (so it yields no answer)."""
    from ..generation import generate_responses, make_backend

    backend = make_backend(loaded, gen)

    def generate(prompts: list[str]) -> list[str]:
        out = []
        for (r,) in generate_responses(backend, prompts, gen, loaded.reasoning, num_samples=1):
            closed = loaded.reasoning == "off" or r.think_finish == "stop"
            out.append(r.response if closed or not strict_think else (r.think or ""))
        return out

    return generate


@functools.lru_cache(maxsize=None)
def _lm_class():
    """`ReasoningLM`, built on first use so importing this module does not import lm-eval/torch."""
    HFLM = _require_lm_eval()

    class ReasoningLM(HFLM):
        """HFLM whose ``generate_until`` answers through the chat template with reasoning and
        returns the final answer only; scoring requests stay plain HF log-likelihoods."""

        def __init__(self, loaded, generator: GenerateFn, *, system: str | None = None, batch_size: int = 8):
            super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
            self.loaded, self.generator, self.system = loaded, generator, system
            self.records: list[dict[str, Any]] = []
            self.stats: Counter = Counter()

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self.stats["loglikelihood_requests"] += len(requests)
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            self.stats["loglikelihood_requests"] += len(requests)
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from ..chat_templates import render_prompt

            thinking = self.loaded.reasoning != "off"
            contexts = [r.args[0] for r in requests]
            prompts = [render_prompt(self.tokenizer, c, system=self.system, open_think=thinking) for c in contexts]
            raws = self.generator(prompts)
            if len(raws) != len(prompts):
                raise RuntimeError(f"generator returned {len(raws)} completions for {len(prompts)} prompts")
            answers = []
            for req, context, raw in zip(requests, contexts, raws):
                kwargs = req.args[1] if len(req.args) > 1 and isinstance(req.args[1], dict) else {}
                parsed = parse(raw, think_opened_in_prompt=thinking)
                closed = parsed.think_closed or not thinking
                answer = cut_at_stops(parsed.answer, kwargs.get("until")) if closed else ""
                self.stats["generate_requests"] += 1
                self.stats["answered" if answer else ("no_answer" if not closed else "empty_answer")] += 1
                self.stats["has_safe"] += int(parsed.has_safe)
                self.records.append({"task": getattr(req, "task_name", None), "doc_id": getattr(req, "doc_id", None),
                                     "context": context, "completion": raw, "answer": answer,
                                     "think_closed": closed, "has_safe": parsed.has_safe, "issues": parsed.issues})
                self.cache_hook.add_partial("generate_until", req.args, answer)
                answers.append(answer)
            return answers

    return ReasoningLM


def make_lm(loaded, gen=None, *, generator: GenerateFn | None = None, strict_think: bool = True,
            system: str | None = None, batch_size: int | None = None):
    """A `ReasoningLM` for a `models.LoadedModel`. ``generator`` replaces real generation
    (tests, other backends); ``system`` is the system prompt of the chat rendering."""
    if generator is None:
        if gen is None:
            raise ConfigError("make_lm needs a GenerationConfig (gen) or a generator")
        generator = default_generator(loaded, gen, strict_think)
    bs = batch_size or (gen.batch_size if gen is not None else 8)
    return _lm_class()(loaded, generator, system=system, batch_size=bs)


def task_manager(tasks: Sequence[str], include_path: str | None = None, include_defaults: bool = True):
    """An lm-eval TaskManager that knows every task in ``tasks`` (ConfigError naming the unknown
    ones otherwise). Indexing lm-eval's ~10k built-in task files takes seconds, so a folder that
    holds all the requested tasks is used alone (``include_defaults=False``: never index them)."""
    _require_lm_eval()
    from lm_eval.tasks import TaskManager

    tm = None
    if include_path:
        if not Path(include_path).is_dir():
            raise ConfigError(f"task folder {include_path} not found")
        tm = TaskManager(include_path=str(include_path), include_defaults=False)
        if include_defaults and not set(tasks) <= _names(tm):
            tm = None
    if tm is None:
        tm = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=include_defaults)
    names = _names(tm)
    missing = [t for t in tasks if t not in names]
    if missing:
        hints = [f"{t!r} (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(t, names, n=1)) else repr(t)
                 for t in missing]
        raise ConfigError(f"unknown lm-eval task(s): {', '.join(hints)}; list them with `lm-eval ls tasks`")
    return tm


def _names(tm) -> set[str]:
    return set(tm.all_tasks) | set(tm.all_groups) | set(tm.all_tags)


def run_capability(lm, tasks: Sequence[str], *, limit: int | float | None = None, num_fewshot: int | None = None,
                   include_path: str | None = None, seed: int = 0, bootstrap_iters: int = 1000,
                   output_dir: str | Path | None = None, extra: dict[str, Any] | None = None,
                   manager=None) -> dict[str, Any]:
    """Run lm-eval ``tasks`` on a `ReasoningLM`; return (and write to ``output_dir``) the results.

    The returned dict has lm-eval's ``results`` (``{task: {"<metric>,<filter>": value, …}}``),
    ``n-samples``, ``versions``, ``configs`` and ``safetrigger`` (answer counts, settings).
    ``manager``: a `task_manager` built beforehand (it is built here otherwise)."""
    tasks = [t.strip() for t in tasks if t and t.strip()]
    if not tasks:
        raise ConfigError("no lm-eval tasks given (e.g. --tasks arc_easy,winogrande,drop)")
    if limit is not None and (isinstance(limit, bool) or limit <= 0):
        raise ConfigError(f"limit must be > 0 (or omitted for all), got {limit!r}")
    tm = manager or task_manager(tasks, include_path)
    from lm_eval import simple_evaluate

    try:
        res = simple_evaluate(model=lm, tasks=list(tasks), task_manager=tm, limit=limit, num_fewshot=num_fewshot,
                              log_samples=True, bootstrap_iters=bootstrap_iters, random_seed=seed,
                              numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    except Exception as e:
        if sum(lm.stats.values()):  # the model had been called: not a task/data problem
            raise
        msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
        raise DataError(f"lm-eval could not prepare task(s) {', '.join(tasks)} ({msg}); task data is downloaded "
                        f"from the Hugging Face hub on first use: run once with network access (or point "
                        f"HF_DATASETS_CACHE at a cache that has it), or use local tasks via include_path") from None
    out = {k: res.get(k) for k in ("results", "groups", "n-samples", "versions", "higher_is_better") if k in res}
    out["configs"] = json.loads(json.dumps(res.get("configs", {}), default=str))
    out["safetrigger"] = {"tasks": list(tasks), "limit": limit, "num_fewshot": num_fewshot, "seed": seed,
                          **dict(lm.stats), **(extra or {})}
    if output_dir is not None:
        write_outputs(Path(output_dir), out, res.get("samples") or {}, lm.records)
    return out


def write_outputs(out_dir: Path, summary: dict[str, Any], samples: dict[str, list], records: list[dict]) -> None:
    """``results.json``, ``samples_<task>.jsonl`` (what lm-eval scored) and ``reasoning.jsonl``
    (every generation with its reasoning, for inspection)."""
    from ..atomic import write_json
    from ..jsonl import write_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", summary)
    for task, rows in samples.items():
        write_jsonl(out_dir / f"samples_{task}.jsonl", (json.loads(json.dumps(r, default=str)) for r in rows))
    write_jsonl(out_dir / "reasoning.jsonl", records)


def evaluate_model(cfg, tasks: Sequence[str], *, limit: int | None = None, num_fewshot: int | None = None,
                   include_path: str | None = None, output_dir: str | None = None, strict_think: bool = True,
                   generator: GenerateFn | None = None) -> dict[str, Any]:
    """Load ``cfg.model`` and run `run_capability` (the ``safetrigger capability`` command)."""
    from ..models import load_model, system_prompt

    tasks = [t.strip() for t in tasks if t and t.strip()]
    manager = task_manager(tasks, include_path) if tasks else None  # bad task names fail before the (slow) model load
    loaded = load_model(cfg.model)
    lm = make_lm(loaded, cfg.generation, generator=generator, strict_think=strict_think,
                 system=system_prompt(cfg.model, loaded.reasoning))
    extra = {"model": loaded.identity, "reasoning": loaded.reasoning, "strict_think": strict_think,
             "thinking_budget": cfg.generation.thinking_budget, "max_new_tokens": cfg.generation.max_new_tokens}
    return run_capability(lm, tasks, limit=limit, num_fewshot=num_fewshot, include_path=include_path,
                          seed=cfg.generation.seed, output_dir=output_dir, extra=extra, manager=manager)


__all__ = ["GenerateFn", "cut_at_stops", "default_generator", "evaluate_model", "make_lm", "run_capability",
           "task_manager", "write_outputs"]
