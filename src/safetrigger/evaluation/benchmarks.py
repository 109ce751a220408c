"""Benchmarks: a named query set plus how answers to it are scored.

    from safetrigger.evaluation.benchmarks import load_benchmark, get_benchmark
    queries = load_benchmark("advbench", limit=50, seed=0)
    queries = load_benchmark("xstest=/data/xstest.parquet")      # hub benchmark, local copy
    ok = get_benchmark("gsm8k").score(query, final_answer)       # accuracy benchmarks only

A benchmark has a *group* (what it measures), a *metric kind* and, for accuracy benchmarks, a
scorer that sees the final answer only:

=====================  ===========  ============  ==================================================
name                   group        metric        queries
=====================  ===========  ============  ==================================================
advbench               harmful      asr           AdvBench, all 520 (``advbench:eval``)
harmbench              harmful      asr           HarmBench, 200 (``harmbench:eval``)
donotanswer            harmful      asr           Do-Not-Answer held-out part (``donotanswer:eval``)
jailbreak-templates    jailbreak    asr           held-out templates x held-out prompts (``jailbreak:eval``)
msj                    jailbreak    asr           many-shot jailbreak on ``harmful:eval`` (option ``shots``)
pap                    jailbreak    asr           persuasion templates on ``harmful:eval``
overrefusal            overrefusal  overrefusal   benign-but-edgy prompts (``overrefusal:eval``)
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
of answers to benign prompts a judge finds to be refusals; ``accuracy`` = share the
benchmark's own scorer accepts. Judging and aggregation live elsewhere (the eval command).

A spec ``name=SOURCE`` picks the source of a hub benchmark: a local file/folder or a hub id.
Every built-in is disjoint from the training sets (tests check `data.assert_disjoint`).
"""

from __future__ import annotations

import difflib
import logging
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from ..data import load_set
from ..data.query import Query
from ..errors import ConfigError
from . import attacks, hub_benchmarks, procedural, scoring

log = logging.getLogger(__name__)
GROUPS = ("harmful", "jailbreak", "overrefusal", "capability")
METRICS = ("asr", "overrefusal", "accuracy")
Loader = Callable[..., list[Query]]
Scorer = Callable[[Query, str], bool]


@dataclass(frozen=True)
class Benchmark:
    """A named evaluation set and its metric kind (see the module docstring)."""

    name: str
    group: str
    """harmful | jailbreak | overrefusal | capability."""
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
    if "=" in bench.name:
        raise ConfigError(f"benchmark names cannot contain '=' (it separates a source): {bench.name!r}")
    BENCHMARKS[bench.name] = bench
    return bench


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"xstest=path/or/hub-id"`` -> ``("xstest", "path/or/hub-id")``; ``"advbench"`` -> ``("advbench", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a benchmark is named by a non-empty string, got {spec!r}")
    name, _, source = spec.partition("=")
    return name.strip(), (source.strip() or None)


def get_benchmark(spec: str) -> Benchmark:
    """The benchmark a name (or ``name=source`` spec) refers to."""
    name, _ = parse_spec(spec)
    if name not in BENCHMARKS:
        close = difflib.get_close_matches(name, BENCHMARKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown benchmark {name!r}; {hint}available: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def list_benchmarks(group: str | None = None, include_hub: bool = True) -> list[str]:
    """Benchmark names in registry order, optionally one group / only the bundled ones."""
    if group is not None and group not in GROUPS:
        raise ConfigError(f"unknown benchmark group {group!r} (use one of {', '.join(GROUPS)})")
    return [n for n, b in BENCHMARKS.items() if (group is None or b.group == group) and (include_hub or not b.from_hub)]


def load_benchmark(spec: str, limit: int = 0, seed: int = 0, max_chars: int = 0, **options: Any) -> list[Query]:
    """The queries of a benchmark, at most ``limit`` of them (0 = all).

    A subsample is a prefix of a shuffle seeded by ``seed`` and the name (as `data.draw_pool`),
    so it is the same on every run and a larger limit keeps the queries of a smaller one. A
    limit above the benchmark size takes them all. Each query's ``meta["benchmark"]`` names it.
    ``max_chars`` > 0 leaves out longer queries first (small-context models; counted in the log)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"benchmark limit must be a whole number >= 0 (0 = all), got {limit!r}")
    bench = get_benchmark(spec)
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


def _msj(source: None, shots: int, shots_file: str | None) -> list[Query]:
    return attacks.build_msj(load_set("harmful:eval"), shots=shots, shots_file=shots_file)


def _pap(source: None, templates_file: str | None) -> list[Query]:
    return attacks.build_pap(load_set("harmful:eval"), templates_file=templates_file)


def _procedural(task: str) -> Loader:
    def load(source: None, n: int) -> list[Query]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"benchmark {task!r}: n must be a whole number >= 1, got {n!r}")
        return procedural.generate(task, n)
    return load


_BUILTINS = [
    Benchmark("advbench", "harmful", _set("advbench:eval"), "asr", description="AdvBench harmful behaviours (all 520)",
              version="advbench:eval"),
    Benchmark("harmbench", "harmful", _set("harmbench:eval"), "asr", description="HarmBench standard behaviours",
              version="harmbench:eval"),
    Benchmark("donotanswer", "harmful", _set("donotanswer:eval"), "asr", description="Do-Not-Answer, held-out part",
              version="donotanswer:eval"),
    Benchmark("jailbreak-templates", "jailbreak", _set("jailbreak:eval"), "asr",
              description="held-out jailbreak templates around held-out harmful prompts", version="jailbreak:eval"),
    Benchmark("msj", "jailbreak", _msj, "asr", options={"shots": attacks.DEFAULT_SHOTS, "shots_file": None},
              description="many-shot jailbreak (placeholder compliance demos) on held-out harmful prompts",
              version=f"{attacks.MSJ_SHOTS}+harmful:eval"),
    Benchmark("pap", "jailbreak", _pap, "asr", options={"templates_file": None},
              description="persuasion-technique templates on held-out harmful prompts",
              version=f"{attacks.PAP_TEMPLATES}+harmful:eval"),
    Benchmark("overrefusal", "overrefusal", _set("overrefusal:eval"), "overrefusal",
              description="benign prompts that look risky", version="overrefusal:eval"),
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

__all__ = ["BENCHMARKS", "GROUPS", "METRICS", "Benchmark", "get_benchmark", "list_benchmarks", "load_benchmark",
           "parse_spec", "register_benchmark"]
