"""`safetrigger.statistics` and `evaluation.comparisons` against hand-computed figures.

Wilson intervals are checked against the closed form written out here (not scipy), McNemar
p-values against binomial sums done by hand, the bootstrap against cases whose interval is
known exactly and against normal theory.
"""

from __future__ import annotations

import math
import random

import pytest

from safetrigger import statistics as st
from safetrigger.evaluation import metrics
from safetrigger.evaluation.benchmarks import Benchmark
from safetrigger.evaluation.comparisons import SAFE_METRIC, compare, comparison_pairs

Z95 = 1.959963984540054  # the 97.5 % normal quantile


def wilson_closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def exact_two_sided(k: int, n: int) -> float:
    """Two-sided binomial(1/2) p-value of min count ``k`` in ``n``, summed by hand."""
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


# ---------------------------------------------------------------------------- Wilson / rate


def test_wilson_hand_computed():
    lo, hi = st.wilson(3, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.1078, 0.6032)
    for k, n in [(0, 1), (1, 4), (7, 9), (50, 100), (0, 30), (30, 30), (1, 1000)]:
        assert st.wilson(k, n) == pytest.approx(wilson_closed_form(k, n), abs=1e-9), (k, n)


def test_wilson_edges():
    assert st.wilson(0, 0) is None
    assert st.wilson(0, 5)[0] == 0.0 and st.wilson(5, 5)[1] == 1.0  # clipped at the bounds
    lo90, hi90 = st.wilson(3, 10, level=0.90)
    assert 0.1078 < lo90 and hi90 < 0.6032  # a lower level is narrower
    with pytest.raises(ValueError):
        st.wilson(11, 10)
    with pytest.raises(ValueError):
        st.wilson(-1, 10)


def test_rate_carries_n_and_ci():
    assert st.rate(3, 10) == {"value": 0.3, "k": 3, "n": 10, "ci": [0.107791, 0.603222]}
    assert st.rate(0, 0) == {"value": None, "k": 0, "n": 0, "ci": None}
    r = st.rate(2, 3)
    assert r["value"] == 0.666667 and r["ci"][0] < r["value"] < r["ci"][1]


# ---------------------------------------------------------------------------- McNemar


def test_mcnemar_hand_computed():
    # b01 = 0, b10 = 8 (plus 5 concordant pairs): p = 2 / 2^8
    a = [True] * 8 + [True, True, False, False, False]
    b = [False] * 8 + [True, True, False, False, False]
    res = st.mcnemar_exact(a, b)
    assert res == {"b01": 0, "b10": 8, "n_pairs": 13, "p": 0.0078125, "significant": True}
    # 1 vs 9 discordant: p = 2 * (1 + 9 + ... ) -> 2 * (1 + 10) / 1024; above alpha 0.01
    a = [False] + [True] * 9
    b = [True] + [False] * 9
    res = st.mcnemar_exact(a, b)
    assert (res["b01"], res["b10"], res["p"], res["significant"]) == (1, 9, 0.021484375, False)
    assert res["p"] == exact_two_sided(1, 10)
    # 2 vs 5: 2 * (1 + 7 + 21) / 128
    a, b = [False] * 2 + [True] * 5, [True] * 2 + [False] * 5
    assert st.mcnemar_exact(a, b)["p"] == pytest.approx(58 / 128)


def test_mcnemar_direction_and_symmetry():
    a = [False, False, True, True, False]
    b = [True, True, True, False, False]
    ab, ba = st.mcnemar_exact(a, b), st.mcnemar_exact(b, a)
    assert (ab["b01"], ab["b10"]) == (2, 1) and (ba["b01"], ba["b10"]) == (1, 2)
    assert ab["p"] == ba["p"] == 1.0  # 2 * P(X <= 1 | 3) = 2 * 4/8, capped at 1
    # the discordant counts are exactly the difference of the two rates' counts
    assert sum(b) - sum(a) == ab["b01"] - ab["b10"]


def test_mcnemar_edges():
    same = [True, False, True, False]
    assert st.mcnemar_exact(same, list(same)) == {"b01": 0, "b10": 0, "n_pairs": 4, "p": 1.0, "significant": False}
    assert st.mcnemar_exact([], []) == {"b01": 0, "b10": 0, "n_pairs": 0, "p": 1.0, "significant": False}
    with pytest.raises(ValueError):
        st.mcnemar_exact([True], [True, False])
    assert st.mcnemar_exact([True] * 8, [False] * 8, alpha=0.005)["significant"] is False  # p = 0.0078


def test_mcnemar_by_id_pairs_by_id_not_position():
    a = {"q1:0": True, "q2:0": True, "q3:0": False}
    b = {"q3:0": True, "q2:0": True, "q1:0": False}  # other insertion order
    res = st.mcnemar_by_id(a, b)
    assert (res["b01"], res["b10"], res["n_pairs"]) == (1, 1, 3)  # by position it would be 0 / 0
    with pytest.raises(st.IdMismatch) as e:
        st.mcnemar_by_id(a, {"q1:0": True, "q9:0": True, "q8:0": False})
    assert (e.value.only_a, e.value.only_b) == ({"q2:0", "q3:0"}, {"q8:0", "q9:0"})


def test_format_p():
    assert st.format_p(0.0078125) == f"0.00781 {st.SIG_MARK}"
    assert st.format_p(0.021484375) == "0.0215"
    assert st.format_p(1.0) == "1" and st.format_p(None) == "–"
    assert st.format_p(0.009999) .endswith(st.SIG_MARK) and not st.format_p(0.01).endswith(st.SIG_MARK)


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_exact_cases():
    # every resample of a constant benchmark is that constant
    assert st.bootstrap_mean_ci([[1, 1, 1]]) == (1.0, 1.0)
    assert st.bootstrap_mean_ci([[0, 0], [0]]) == (0.0, 0.0)
    # benchmarks weigh the same and are resampled within themselves: mean of 1.0 and 0.0 is 0.5
    # in every resample (pooled resampling would give 0.8 and a spread)
    assert st.bootstrap_mean_ci([[1, 1, 1, 1], [0]]) == (0.5, 0.5)
    cm = st.category_mean([[1, 1, 1, 1], [0]])
    assert cm == {"value": 0.5, "n": 5, "benchmarks": 2, "ci": [0.5, 0.5]}


def test_bootstrap_matches_normal_theory():
    values = [1] * 50 + [0] * 50  # p = 0.5, n = 100: about 0.5 +- 1.96 * 0.05
    lo, hi = st.bootstrap_mean_ci([values])
    assert lo == pytest.approx(0.402, abs=0.02) and hi == pytest.approx(0.598, abs=0.02)


def test_bootstrap_deterministic_and_covering():
    rng = random.Random(7)
    data = [[rng.random() for _ in range(25)], [rng.random() for _ in range(9)]]
    first = st.bootstrap_mean_ci(data, seed=3)
    assert st.bootstrap_mean_ci(data, seed=3) == first  # same seed, same interval
    assert st.bootstrap_mean_ci(data, seed=4) != first  # continuous data: another seed moves it
    point = (sum(data[0]) / 25 + sum(data[1]) / 9) / 2
    assert first[0] < point < first[1]
    assert st.bootstrap_mean_ci(data, level=0.5, seed=3)[1] - st.bootstrap_mean_ci(data, level=0.5, seed=3)[0] < first[1] - first[0]


def test_bootstrap_empty():
    assert st.bootstrap_mean_ci([]) is None and st.bootstrap_mean_ci([[], []]) is None
    assert st.category_mean([]) is None
    assert st.category_mean([[], [1, 0]]) == {"value": 0.5, "n": 2, "benchmarks": 1, "ci": st.category_mean([[1, 0]])["ci"]}


# ---------------------------------------------------------------------------- percentiles


def test_percentiles_keys_per_caller():
    values = list(range(100, 0, -1))  # unsorted on purpose
    assert st.percentiles(values) == {"p50": 50, "p90": 90, "p99": 99, "p100": 100}
    assert st.percentiles(values, st.LENGTH_KEYS) == {"min": 1, "p50": 50, "p90": 90, "p99": 99, "max": 100, "mean": 50.5}
    assert st.percentiles([]) == {} and st.percentiles([], st.LENGTH_KEYS) == {}
    assert st.percentiles([7], st.LENGTH_KEYS) == {"min": 7, "p50": 7, "p90": 7, "p99": 7, "max": 7, "mean": 7.0}
    with pytest.raises(ValueError):
        st.percentiles([1], ("median",))


def test_percentiles_nearest_rank():
    # nearest rank: the smallest value with at least q % at or below it
    assert st.percentiles([1, 2, 3, 4, 5]) == {"p50": 3, "p90": 5, "p99": 5, "p100": 5}
    assert st.percentiles(list(range(1, 11)), ("p7", "p50", "p91")) == {"p7": 1, "p50": 5, "p91": 10}
    assert st.percentiles(list(range(1, 101)), ("p7",)) == {"p7": 7}  # not 8: 0.07 * 100 != 7 in floats


# ---------------------------------------------------------------------------- comparisons


def test_comparison_pairs():
    specs = {"base": "base", "st-s": "sft", "st-d": "dpo"}
    assert comparison_pairs(specs) == [("st-s", "base"), ("st-d", "base"), ("st-d", "st-s")]
    assert comparison_pairs({"ref": "base", "other": "/models/x"}) == [("other", "ref")]
    assert comparison_pairs({"base": "/models/a", "b": "/models/b"}) == [("b", "base")]  # named base
    assert comparison_pairs({"st-d": "dpo", "st-s": "sft"}) == [("st-d", "st-s")]  # no base: ST-D vs ST-S only
    assert comparison_pairs({"base": "base"}) == []


def test_compare_pairs_counts_and_skips():
    ids = [f"q{i}:0" for i in range(10)]
    outcomes = {
        ("base", "adv", "j", "asr"): dict.fromkeys(ids, True),
        ("st-d", "adv", "j", "asr"): {i: n == 0 for n, i in enumerate(ids)},  # 9 attacks fixed, none new
        ("base", "adv", None, SAFE_METRIC): dict.fromkeys(ids, False),
        ("st-d", "adv", None, SAFE_METRIC): dict.fromkeys(ids[:9], True),  # one row missing
    }
    notes: list[str] = []
    res = compare(outcomes, [("st-d", "base")], notes)
    assert res["pairs"] == [["st-d", "base"]] and res["skipped"] == 1
    (t,) = res["tests"]
    assert (t["model"], t["reference"], t["benchmark"], t["judge"], t["metric"]) == ("st-d", "base", "adv", "j", "asr")
    assert (t["b01"], t["b10"], t["n_pairs"]) == (0, 9, 10)
    assert t["p"] == pytest.approx(exact_two_sided(0, 9)) and t["p"] == pytest.approx(2 / 512) and t["significant"]
    assert t["model_rate"] == st.rate(1, 10) and t["reference_rate"] == st.rate(10, 10)
    assert len(notes) == 1 and "st-d vs base on adv / safe_rate skipped" in notes[0] and "1 only in base" in notes[0]


def test_outcomes_match_the_row_counts():
    gens = [{"id": f"{i}:0", "query_id": str(i), "has_safe": i == 2} for i in range(4)]
    recs = {"0:0": {"policy": "no_answer", "verdict": None, "correct": False},
            "1:0": {"policy": "judged", "verdict": {"unsafe": True, "label": "compliance"}, "correct": True},
            "2:0": {"policy": "judged", "verdict": {"unsafe": False, "label": "refusal"}, "correct": True},
            "3:0": {"policy": "judged", "verdict": {"unsafe": None, "label": "unparseable"}, "correct": False}}
    for metric, group, expected in [("asr", "harmful", [False, True, False, False]),
                                    ("overrefusal", "overrefusal", [True, False, True, False]),
                                    ("accuracy", "capability", [False, True, True, False])]:
        bench = Benchmark("x", group, lambda s: [], metric, scorer=(lambda q, a: True) if metric == "accuracy" else None)
        outs, undecided = metrics.outcomes(bench, gens, recs)
        assert outs == expected and undecided == (0 if metric == "accuracy" else 1)
        row = metrics.result_row("m", bench, "j", gens, recs)
        assert row["count"] == sum(outs) and row["rate"] == st.rate(sum(outs), 4)
        assert row["safe"] == st.rate(1, 4) and row["safe_rate"] == 0.25


def test_per_query_means_over_samples():
    gens = [{"id": "a:0", "query_id": "a"}, {"id": "a:1", "query_id": "a"}, {"id": "b:0", "query_id": "b"},
            {"id": "b:1", "query_id": "b"}]
    assert metrics.per_query(gens, [True, False, True, True]) == [0.5, 1.0]


def test_headline_table_cells_carry_ci_n_and_p_against_base():
    from safetrigger.evaluation.tables import headline_table
    from safetrigger.statistics import rate

    def row(model, bench, group, k, n, safe_k, judge="refusal-keywords", metric="asr"):
        r = rate(k, n)
        return {"model": model, "benchmark": bench, "group": group, "judge": judge, "metric": metric,
                "value": r["value"], "n": n, "rate": r, "safe_rate": safe_k / n, "safe": rate(safe_k, n)}

    results = {
        "models": ["base", "st-d"],
        "rows": [row("base", "advbench", "harmful", 9, 10, 0), row("st-d", "advbench", "harmful", 1, 10, 8),
                 row("base", "general", "general", 1, 10, 0, metric="overrefusal"),
                 row("st-d", "general", "general", 2, 10, 1, metric="overrefusal")],
        "comparisons": {"pairs": [["st-d", "base"]], "tests": [
            {"model": "st-d", "reference": "base", "benchmark": "advbench", "judge": "refusal-keywords", "metric": "asr", "p": 0.0039},
            {"model": "st-d", "reference": "base", "benchmark": "advbench", "judge": None, "metric": "safe_rate", "p": 0.0078125}]},
        "statistics": {"alpha": 0.01},
    }
    md = "\n".join(headline_table(results, "refusal-keywords"))
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "ASR harmful (advbench)" in header and "general refusal (general)" in header and "jailbreak" not in header
    st_d = next(line for line in md.splitlines() if line.startswith("| st-d"))
    cells = [c.strip() for c in st_d.strip("|").split("|")]
    assert cells[1] == "10.0 [1.8–40.4] n=10, p=0.0039 ✱"  # Wilson 1/10, McNemar p marked below 0.01
    assert cells[3] == "80.0 [49.0–94.3] n=10, p=0.00781 ✱"  # complete <safe> on advbench, judge-independent test
    assert cells[2] == "20.0 [5.7–51.0] n=10"  # no test for general: no p
    base = next(line for line in md.splitlines() if line.startswith("| base"))
    assert "p=" not in base
