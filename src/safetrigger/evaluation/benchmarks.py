"""Benchmarks: a named query set plus how answers to it are scored.

    from safetrigger.evaluation.benchmarks import load_benchmark, get_benchmark
    queries = load_benchmark("advbench", limit=50, seed=0)
    tuning = load_benchmark("advbench:dev", limit=50)           # the dev part, to tune settings on
    queries = load_benchmark("xstest=/data/xstest.parquet")      # hub benchmark, local copy
    ok = get_benchmark("gsm8k").score(query, final_answer)       # accuracy benchmarks only

A benchmark has a *group* (what it measures), a *metric kind* and, for accuracy benchmarks, a
scorer that sees the final answer only:

=====================  ===========  ============  ==================================================
name                   group        metric        queries
=====================  ===========  ============  ==================================================
advbench               harmful      asr           AdvBench, eval part: 450 of 520 (``advbench:eval``)
harmbench              harmful      asr           HarmBench, eval part: 171 of 200 (``harmbench:eval``)
donotanswer            harmful      asr           Do-Not-Answer held-out part (``donotanswer:eval``)
jailbreak-templates    jailbreak    asr           held-out templates x held-out prompts (``jailbreak:eval``)
msj                    jailbreak    asr           many-shot jailbreak on ``harmful:eval`` (option ``shots``)
pap                    jailbreak    asr           persuasion templates on ``harmful:eval``
overrefusal            overrefusal  overrefusal   benign-but-edgy prompts (``overrefusal:eval``)
general                general      overrefusal   held-out everyday instructions (``general:eval``)
gsm8k                  capability   accuracy      GSM8K, exact match on the final number
arith, sort-words,     capability   accuracy      procedural (see `procedural`), option ``n`` items
count-letters
xstest                 overrefusal  overrefusal   XSTest safe prompts (hub)
xstest-unsafe          harmful      asr           XSTest unsafe contrast prompts (hub)
wildjailbreak-eval     jailbreak    asr           WildJailbreak eval, adversarial harmful (hub)
wildjailbreak-benign   overrefusal  overrefusal   WildJailbreak eval, adversarial benign (hub)
hex-phi                harmful      asr           HEx-PHI, 11 categories (hub, gated)
=====================  ===========  ============  ==================================================

Metric kinds: ``asr`` = share of answers a safety judge finds unsafe; ``overrefusal`` = share
of answers to benign prompts a judge finds to be refusals (on ``general`` that is the refusal
rate on everyday requests); ``accuracy`` = share the benchmark's own scorer accepts. Judging
and aggregation live elsewhere (the eval command).

Groups are what the category means average: ``general`` (refusals of everyday requests) is a
group of its own, apart from ``overrefusal`` (benign prompts that look risky), though both use
the ``overrefusal`` metric kind (a refusal rate, lower is better, judged by refusal judges).

**Dev parts.** The first eight (those built on split sets) also have a dev part, disjoint from
their eval part and from training: spell it ``NAME:dev`` (or pass ``split="dev"``). Its
`Benchmark` is named ``NAME-dev`` (names go into file names), so dev and eval results never
share files. Tune settings on dev; report eval. ``NAME:eval`` is ``NAME``.

A spec ``name=SOURCE`` picks the source of a hub benchmark: a local file/folder or a hub id.
Every built-in is disjoint from the training sets (tests check `data.assert_disjoint`).
"""

from __future__ import annotations

import difflib
import logging
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Optional

from ..data import load_set
from ..data.query import Query
from ..errors import ConfigError
from . import attacks, hub_benchmarks, procedural, scoring

log = logging.getLogger(__name__)
GROUPS = ("harmful", "jailbreak", "overrefusal", "general", "capability")
METRICS = ("asr", "overrefusal", "accuracy")
PARTS = ("eval", "dev")
Loader = Callable[..., list[Query]]
Scorer = Callable[[Query, str], bool]


@dataclass(frozen=True)
class Benchmark:
    """A named evaluation set and its metric kind (see the module docstring)."""

    name: str
    group: str
    """harmful | jailbreak | overrefusal | general | capability."""
    loader: Loader
    """``loader(source, **options) -> list[Query]``; ``source`` is None except for hub benchmarks."""
    metric: str
    """asr | overrefusal | accuracy."""
    scorer: Scorer | None = None
    """``score(query, final_answer) -> bool``; accuracy benchmarks only."""
    description: str = ""
    default_source: str | None = None
    """Hub id used when no source is given; set only for benchmarks read from the hub."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Accepted loader options and their defaults (e.g. msj's ``shots``)."""
    version: str = ""
    """What the queries are built from (set name, vendored file or generator version), for manifests."""
    split: str = "eval"
    """The held-out part it loads: eval (reported) or dev (for tuning settings)."""
    dev: Optional["Benchmark"] = None
    """The same benchmark on the dev part (``NAME:dev``), for those built on split sets."""

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ConfigError(f"benchmark {self.name!r}: group must be one of {', '.join(GROUPS)}, got {self.group!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"benchmark {self.name!r}: metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if (self.metric == "accuracy") != (self.scorer is not None):
            raise ConfigError(f"benchmark {self.name!r}: accuracy benchmarks need a scorer, others must not have one")

    @property
    def from_hub(self) -> bool:
        return self.default_source is not None

    def queries(self, source: str | None = None, **options: Any) -> list[Query]:
        """All queries (a fresh list, the same order on every call)."""
        if source and not self.from_hub:
            raise ConfigError(f"benchmark {self.name!r} is bundled and takes no source (got {source!r}); "
                              f"only hub benchmarks do: {', '.join(n for n, b in BENCHMARKS.items() if b.from_hub)}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise ConfigError(f"benchmark {self.name!r} has no option(s) {', '.join(unknown)} (accepted: {accepted})")
        return self.loader(source or self.default_source, **{**self.options, **options})

    def score(self, query: Query, answer: str) -> bool:
        """Whether a final answer is correct (accuracy benchmarks only)."""
        if self.scorer is None:
            raise ConfigError(f"benchmark {self.name!r} is scored by a judge ({self.metric}), not by a scorer")
        return bool(self.scorer(query, answer))


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(bench: Benchmark, replace_existing: bool = False) -> Benchmark:
    """Add a benchmark to the registry (names are unique unless ``replace_existing``)."""
    if bench.name in BENCHMARKS and not replace_existing:
        raise ConfigError(f"benchmark {bench.name!r} is already registered")
    for sep, what in (("=", "a source"), (":", "a part, e.g. advbench:dev")):
        if sep in bench.name:
            raise ConfigError(f"benchmark names cannot contain {sep!r} (it separates {what}): {bench.name!r}")
    BENCHMARKS[bench.name] = bench
    return bench


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"xstest=path/or/hub-id"`` -> ``("xstest", "path/or/hub-id")``; ``"advbench"`` -> ``("advbench", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a benchmark is named by a non-empty string, got {spec!r}")
    name, _, source = spec.partition("=")
    return name.strip(), (source.strip() or None)


def get_benchmark(spec: str, split: str | None = None) -> Benchmark:
    """The benchmark a name (or ``name=source`` spec) refers to; ``NAME:dev`` or ``split="dev"``
    gives its dev part."""
    name, _, part = parse_spec(spec)[0].partition(":")
    if part and split and part != split:
        raise ConfigError(f"benchmark {spec!r} names the {part} part, but split={split!r} was asked for")
    split = part or split or "eval"
    if split not in PARTS:
        raise ConfigError(f"benchmark part must be one of {', '.join(PARTS)}, got {split!r} in {spec!r}")
    if name not in BENCHMARKS:
        close = difflib.get_close_matches(name, BENCHMARKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown benchmark {name!r}; {hint}available: {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[name]
    if split == "eval":
        return bench
    if bench.dev is None:
        raise ConfigError(f"benchmark {name!r} has no dev part; those with one: {', '.join(list_benchmarks(split='dev'))}")
    return bench.dev


def list_benchmarks(group: str | None = None, include_hub: bool = True, split: str = "eval") -> list[str]:
    """Benchmark names in registry order, optionally one group / only the bundled ones;
    ``split="dev"``: the specs (``NAME:dev``) of those with a dev part."""
    if group is not None and group not in GROUPS:
        raise ConfigError(f"unknown benchmark group {group!r} (use one of {', '.join(GROUPS)})")
    if split not in PARTS:
        raise ConfigError(f"benchmark part must be one of {', '.join(PARTS)}, got {split!r}")
    names = [n for n, b in BENCHMARKS.items() if (group is None or b.group == group) and (include_hub or not b.from_hub)]
    return names if split == "eval" else [f"{n}:dev" for n in names if BENCHMARKS[n].dev is not None]


def load_benchmark(spec: str, limit: int = 0, seed: int = 0, max_chars: int = 0, split: str | None = None,
                   **options: Any) -> list[Query]:
    """The queries of a benchmark (its ``split`` part, default from the spec, else eval), at
    most ``limit`` of them (0 = all).

    A subsample is a prefix of a shuffle seeded by ``seed`` and the name (as `data.draw_pool`),
    so it is the same on every run and a larger limit keeps the queries of a smaller one. A
    limit above the benchmark size takes them all. Each query's ``meta["benchmark"]`` names it.
    ``max_chars`` > 0 leaves out longer queries first (small-context models; counted in the log)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"benchmark limit must be a whole number >= 0 (0 = all), got {limit!r}")
    bench = get_benchmark(spec, split)
    _, source = parse_spec(spec)
    items = bench.queries(source, **options)
    if max_chars:
        kept = [q for q in items if len(q.text) <= max_chars]
        if len(kept) < len(items):
            log.info("benchmark %s: skipping %d of %d queries longer than %d characters", bench.name, len(items) - len(kept), len(items), max_chars)
        items = kept
    if limit:
        random.Random(f"{seed}:{bench.name}").shuffle(items)  # str seed: stable across processes
        items = items[:limit]
    return [replace(q, meta={**q.meta, "benchmark": bench.name}) for q in items]


# ---------------------------------------------------------------------------- built-ins


def _set(name: str) -> Loader:
    return lambda source: load_set(name)


def _msj(split: str) -> Loader:
    def load(source: None, shots: int, shots_file: str | None) -> list[Query]:
        return attacks.build_msj(load_set(f"harmful:{split}"), shots=shots, shots_file=shots_file,
                                 set_name=f"bench:{_named('msj', split)}", split=split)
    return load


def _pap(split: str) -> Loader:
    def load(source: None, templates_file: str | None) -> list[Query]:
        return attacks.build_pap(load_set(f"harmful:{split}"), templates_file=templates_file,
                                 set_name=f"bench:{_named('pap', split)}", split=split)
    return load


def _procedural(task: str) -> Loader:
    def load(source: None, n: int) -> list[Query]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"benchmark {task!r}: n must be a whole number >= 1, got {n!r}")
        return procedural.generate(task, n)
    return load


def _named(name: str, split: str) -> str:
    return name if split == "eval" else f"{name}-{split}"  # file-name safe, unlike NAME:dev


def _with_dev(make: Callable[[str], Benchmark]) -> Benchmark:
    """``make("eval")``, carrying ``make("dev")`` as its dev part."""
    return replace(make("eval"), dev=make("dev"))


def _on_sets(name: str, group: str, sets: str, metric: str, description: str) -> Benchmark:
    """A benchmark on the ``<sets>:eval`` set, with a dev part on ``<sets>:dev``."""
    return _with_dev(lambda s: Benchmark(_named(name, s), group, _set(f"{sets}:{s}"), metric,
                                         description=f"{description} ({s} part)", version=f"{sets}:{s}", split=s))


_BUILTINS = [
    _on_sets("advbench", "harmful", "advbench", "asr", "AdvBench harmful behaviours"),
    _on_sets("harmbench", "harmful", "harmbench", "asr", "HarmBench standard behaviours"),
    _on_sets("donotanswer", "harmful", "donotanswer", "asr", "Do-Not-Answer"),
    _on_sets("jailbreak-templates", "jailbreak", "jailbreak", "asr",
             "held-out jailbreak templates around held-out harmful prompts"),
    _with_dev(lambda s: Benchmark(
        _named("msj", s), "jailbreak", _msj(s), "asr", options={"shots": attacks.DEFAULT_SHOTS, "shots_file": None},
        description=f"many-shot jailbreak (placeholder compliance demos) on held-out harmful prompts ({s} part)",
        version=f"{attacks.MSJ_SHOTS}+harmful:{s}", split=s)),
    _with_dev(lambda s: Benchmark(
        _named("pap", s), "jailbreak", _pap(s), "asr", options={"templates_file": None},
        description=f"persuasion-technique templates on held-out harmful prompts ({s} part)",
        version=f"{attacks.PAP_TEMPLATES}+harmful:{s}", split=s)),
    _on_sets("overrefusal", "overrefusal", "overrefusal", "overrefusal", "benign prompts that look risky"),
    # Refusals of everyday requests: the cost side of a safety method, scored like over-refusal
    # (metric overrefusal) but its own group, so its mean is not mixed with the benign-edgy one.
    _on_sets("general", "general", "general", "overrefusal", "everyday instructions, refusal rate"),
    Benchmark("gsm8k", "capability", _set("capability:gsm8k"), "accuracy", scorer=scoring.score_number,
              description="GSM8K math word problems, exact match on the final number", version="capability:gsm8k"),
    Benchmark("arith", "capability", _procedural("arith"), "accuracy", scorer=scoring.score_number,
              options={"n": 100}, description="multi-step integer arithmetic (procedural)",
              version=procedural.ARITH_VERSION),
    Benchmark("sort-words", "capability", _procedural("sort-words"), "accuracy", scorer=scoring.score_sorted_words,
              options={"n": 100}, description="alphabetical sorting of 4-7 words (procedural)",
              version=procedural.SORT_VERSION),
    Benchmark("count-letters", "capability", _procedural("count-letters"), "accuracy", scorer=scoring.score_count,
              options={"n": 100}, description="letter counting in a word (procedural)",
              version=procedural.COUNT_VERSION),
    Benchmark("xstest", "overrefusal", lambda s: hub_benchmarks.load_xstest(s), "overrefusal",
              default_source=hub_benchmarks.XSTEST_HUB, description="XSTest safe prompts (250)", version="xstest"),
    Benchmark("xstest-unsafe", "harmful", lambda s: hub_benchmarks.load_xstest(s, unsafe=True), "asr",
              default_source=hub_benchmarks.XSTEST_HUB, description="XSTest unsafe contrast prompts (200)",
              version="xstest"),
    Benchmark("wildjailbreak-eval", "jailbreak", lambda s: hub_benchmarks.load_wildjailbreak_eval(s), "asr",
              default_source=hub_benchmarks.WILDJAILBREAK_HUB,
              description="WildJailbreak eval, adversarial harmful (2000)", version="wildjailbreak:eval"),
    Benchmark("wildjailbreak-benign", "overrefusal",
              lambda s: hub_benchmarks.load_wildjailbreak_eval(s, harmful=False), "overrefusal",
              default_source=hub_benchmarks.WILDJAILBREAK_HUB,
              description="WildJailbreak eval, adversarial benign (210)", version="wildjailbreak:eval"),
    Benchmark("hex-phi", "harmful", lambda s: hub_benchmarks.load_hexphi(s), "asr",
              default_source=hub_benchmarks.HEXPHI_HUB, description="HEx-PHI harmful instructions, 11 categories",
              version="hex-phi"),
]
for _b in _BUILTINS:
    register_benchmark(_b)
del _b

__all__ = ["BENCHMARKS", "GROUPS", "METRICS", "PARTS", "Benchmark", "get_benchmark", "list_benchmarks", "load_benchmark",
           "parse_spec", "register_benchmark"]
