"""`safetrigger report`: one self-contained page from a run dir; missing or malformed parts are
said in the page, never a traceback; not a run dir at all is one error line (exit 2)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from report_fixture import HOSTILE, JUDGES, MODELS, N, build_run

from safetrigger.cli import main
from safetrigger.report import write_report

IDS = ["results-table", "plot-asr", "plot-activation", "plot-tradeoff", "plot-reward", "plot-lengths", "sample-browser"]


class Page(HTMLParser):
    """Ids, result cells (data-* attributes + text) and stage rows of a report page."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: dict[str, str] = {}
        self.cells: list[dict] = []
        self.external: list[str] = []
        self._cell: dict | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = tag
        for key in ("src", "href", "xlink:href"):
            v = (a.get(key) or "").strip()
            if v and not v.startswith("#"):  # only in-page anchors are allowed
                self.external.append(f"{tag} {key}={v}")
        if tag == "link" or (tag == "script" and "src" in a):
            self.external.append(f"<{tag}> element")
        if tag == "td" and "data-benchmark" in a:
            self._cell = {**a, "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def sample_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="sample-data">(.*?)</script>', html, re.S)
    assert m, "sample data block missing"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run = build_run(tmp_path_factory.mktemp("report") / "run")
    out = write_report(run)
    return run, out.read_text(encoding="utf-8")


def test_self_contained_with_every_section(full):
    run, html = full
    page = Page(html)
    assert page.external == []
    assert not re.search(r"(?:url\(|@import)\s*['\"]?\s*(?:https?:)?//", html)
    for i in IDS:
        assert i in page.ids, i
    for i in IDS[1:6]:  # each plot holds an inline SVG, not a "missing" note
        block = html.split(f'id="{i}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in block and 'class="missing"' not in block, i
    # the sample parts are styled apart (the cards themselves are built by report.js)
    for cls in ("part-think", "part-safe", "part-answer"):
        assert re.search(rf"\.{cls} \{{[^}}]*background", html), cls


def test_results_table_matches_results_json(full):
    run, html = full
    results = json.loads((run / "eval" / "results.json").read_text())
    cells = {(c["data-model"], c["data-benchmark"], c["data-judge"]): c for c in Page(html).cells}
    assert len(cells) == len(results["rows"]) == len(MODELS) * 2 * len(JUDGES)
    for r in results["rows"]:
        c = cells[(r["model"], r["benchmark"], r["judge"])]
        assert c["text"] == f"{100 * r['value']:.1f}"
        assert float(c["data-value"]) == pytest.approx(r["value"])
        assert [float(c["data-ci-low"]), float(c["data-ci-high"])] == pytest.approx(r["rate"]["ci"])
        lo, hi = r["rate"]["ci"]
        assert c["title"].startswith(f"95% CI {100 * lo:.1f}–{100 * hi:.1f} %, n={r['n']}")
    # a value the fixture makes differ between judges shows differently in the two tables
    assert cells[("base", "advbench", "refusal-minilm")]["text"] == "50.0"
    assert cells[("base", "advbench", "llm-rubric")]["text"] == "75.0"
    means = re.findall(r'data-model="([^"]+)" data-mean="([^"]+)" data-judge="([^"]*)" data-ci-low="([^"]+)" data-ci-high="([^"]+)"', html)
    assert len(means) == len(MODELS) * len(JUDGES) * 2  # harmful and over-refusal means, every table
    for model, group, judge, lo, hi in means:
        assert [float(lo), float(hi)] == pytest.approx(results["category_means_ci"][model][judge][group]["ci"])


def _comparison_rows(html: str) -> list[dict]:
    rows = []
    for attrs, body in re.findall(r'<tr class="comparison[^"]*" ([^>]*)>(.*?)</tr>', html, re.S):
        row = dict(re.findall(r'data-([a-z]+)="([^"]*)"', attrs))
        row["p"], row["p_text"] = re.search(r'<td class="num p-value" data-p="([^"]+)">([^<]*)</td>', body).groups()
        row["cells"] = re.findall(r"<td[^>]*>(?:<code>)?([^<]*)", body)
        rows.append(row)
    return rows


def test_comparisons_table_shows_p_values(full):
    from safetrigger.statistics import format_p

    run, html = full
    tests = json.loads((run / "eval" / "results.json").read_text())["comparisons"]["tests"]
    assert 'id="comparisons-table"' in html
    rows = _comparison_rows(html)
    assert len(rows) == len(tests) == 2 * (len(JUDGES) + 1)  # 2 benchmarks x (judges + <safe> rate), st-d vs base
    for row, t in zip(rows, tests):
        assert (row["model"], row["reference"], row["benchmark"], row["judge"], row["metric"]) == \
            (t["model"], t["reference"], t["benchmark"], t["judge"] or "", t["metric"])
        assert float(row["p"]) == pytest.approx(t["p"]) and row["p_text"] == format_p(t["p"])
        assert row["cells"][7:10] == [str(t["b01"]), str(t["b10"]), str(t["n_pairs"])]
    # the fixture's rubric judge: base 3 of 4 attacks succeed, st-d 1, on the same two prompts fixed
    rubric = next(t for t in tests if (t["benchmark"], t["judge"]) == ("advbench", "llm-rubric"))
    assert (rubric["b01"], rubric["b10"], rubric["p"]) == (0, 2, 0.5)


def test_significant_p_value_is_marked(tmp_path):
    from safetrigger.statistics import SIG_MARK

    run = build_run(tmp_path / "run")
    path = run / "eval" / "results.json"
    results = json.loads(path.read_text())
    results["comparisons"]["tests"][0].update(b01=0, b10=8, n_pairs=8, p=0.0078125, significant=True)
    path.write_text(json.dumps(results))
    rows = _comparison_rows(write_report(run).read_text())
    assert rows[0]["p_text"] == f"0.00781 {SIG_MARK}"
    assert not any(SIG_MARK in r["p_text"] for r in rows[1:])


def test_plots_draw_confidence_intervals(full):
    _, html = full
    panels = {"asr": len(JUDGES), "activation": 1, "tradeoff": len(JUDGES)}
    for plot, n in panels.items():
        block = html.split(f'id="plot-{plot}"', 1)[1].split("</figure>", 1)[0]
        ids = re.findall(rf'id="{plot}-ci-(\d+)-(\d+)-(\d+)"', block)
        # error bars of every model (series) in every panel, each id once on the page
        assert {(p, s) for p, s, _ in ids} == {(str(p), str(s)) for p in range(n) for s in range(len(MODELS))}, plot
        assert len(ids) == len(set(ids)) and html.count(f'id="{plot}-ci-0-0-0"') == 1


def test_results_without_statistics_still_render(tmp_path):
    run = build_run(tmp_path / "run")
    path = run / "eval" / "results.json"
    results = json.loads(path.read_text())
    for key in ("category_means_ci", "comparisons", "statistics"):
        del results[key]
    for r in results["rows"]:
        del r["rate"], r["safe"]
    path.write_text(json.dumps(results))
    html = write_report(run).read_text()
    assert 'id="comparisons-table"' not in html and "data-ci-low" not in html and "-ci-0" not in html
    assert "<svg" in html.split('id="plot-asr"', 1)[1].split("</figure>", 1)[0]  # bars without error bars
    assert 'class="problem' not in html.split('id="results"', 1)[1].split("</section>", 1)[0]


def test_general_is_its_own_column_group_with_its_own_mean(tmp_path):
    run = build_run(tmp_path / "run")
    path = run / "eval" / "results.json"
    results = json.loads(path.read_text())
    # a `general` benchmark next to xstest (over-refusal): same metric kind, its own group
    results["rows"] += [{**r, "benchmark": "general", "group": "general", "value": 1.0}
                        for r in results["rows"] if r["benchmark"] == "xstest"]
    results["benchmarks"]["general"] = {"group": "general", "metric": "overrefusal", "n": N}
    for model, by in results["category_means"].items():
        for judge in JUDGES:
            by[judge]["general"] = 1.0
            ci = {"value": 1.0, "n": N, "benchmarks": 1, "ci": [0.5, 1.0]}
            results["category_means_ci"][model][judge]["general"] = ci
    path.write_text(json.dumps(results))
    html = write_report(run).read_text()
    assert "General · refusal rate ↓" in html and "general refusal ↓" in html
    means = re.findall(r'data-model="([^"]+)" data-mean="([^"]+)" data-judge="([^"]*)" '
                       r'data-ci-low="([^"]+)" data-ci-high="([^"]+)"', html)
    general_means = [m for m in means if m[1] == "general"]
    assert len(general_means) == len(MODELS) * len(JUDGES)
    assert {(lo, hi) for *_, lo, hi in general_means} == {("0.5", "1.0")}
    over = {(m, j): float(lo) for m, g, j, lo, _ in means if g == "overrefusal"}
    assert over == {(m, j): results["category_means_ci"][m][j]["overrefusal"]["ci"][0] for m in MODELS for j in JUDGES}


def test_pipeline_counts_from_stats(full):
    _, html = full
    row = html.split('id="stage-build_sft"', 1)[1].split("</tr>", 1)[0]
    nums = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert nums[:3] == ["30", "27", "3"]
    assert "trigger_rejected: 2" in row and "empty_answer: 1" in row
    dpo = html.split('id="stage-build_dpo"', 1)[1].split("</tr>", 1)[0]
    assert "gap_below_delta: 2" in dpo and re.findall(r'<td class="num">([^<]*)</td>', dpo)[:3] == ["10", "7", "3"]


def test_samples_embedded_safely(full):
    _, html = full
    data = sample_data(html)
    assert len(data["samples"]) == data["total"] == len(MODELS) * 2 * N
    assert {tuple(sorted(s["verdicts"])) for s in data["samples"]} == {tuple(sorted(JUDGES))}
    # model output with </script> and <!-- stays inside the JSON block and reads back intact
    assert any(s["answer"] == HOSTILE for s in data["samples"])
    block = html.split('id="sample-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block
    st_d = [s for s in data["samples"] if s["model"] == "st-d"]
    assert sum(s["safe"] is not None for s in st_d) == len(st_d) // 2


def test_only_generate_says_what_is_missing(tmp_path):
    run = build_run(tmp_path / "run", stages=("generate",), eval_dir=False)
    html = write_report(run).read_text()
    page = Page(html)
    for i in IDS:
        assert i in page.ids, i
    assert "eval not run: <code>safetrigger eval CONFIG</code>" in html
    for stage in ("trigger", "build-sft", "sft", "build-dpo", "dpo"):
        assert f"{stage} not run: <code>safetrigger {stage} CONFIG</code>" in html
    assert "build-dpo not run: <code>safetrigger build-dpo CONFIG</code>" in html.split('id="plot-reward"', 1)[1]
    assert "<svg" not in html  # no eval, no DPO data: no figure at all
    assert Page(html).external == []


def test_malformed_files_are_reported_in_the_page(tmp_path):
    run = build_run(tmp_path / "run")
    (run / "build_sft.stats.json").write_text("{not json")
    (run / "sft.stats.json").write_text("[1, 2]")
    (run / "build_dpo.stats.json").write_text(json.dumps({"queries": 3, "dropped_reasons": "oops"}))
    (run / "eval" / "results.json").write_text('{"rows": [')
    with (run / "eval" / "generations" / "base" / "advbench.jsonl").open("a") as f:
        f.write("this is not json\n")
    html = write_report(run).read_text()
    assert "build_sft.stats.json: not valid JSON (line 1, column 2" in html
    assert "sft.stats.json: expected a JSON object, found list" in html
    assert "build_dpo.stats.json has unexpected content (AttributeError" in html
    assert "eval/results.json: not valid JSON" in html
    assert "generations/base/advbench.jsonl line 5: not valid JSON" in html
    assert "Traceback" not in html
    assert len(sample_data(html)["samples"]) == len(MODELS) * 2 * N  # the good rows still browse


def test_capability_columns_in_every_judge_table(tmp_path):
    run = build_run(tmp_path / "run", capability=True)
    cells = Page(write_report(run).read_text()).cells
    gsm = [c for c in cells if c["data-benchmark"] == "gsm8k"]
    assert sorted(c["data-judge"] for c in gsm) == sorted(list(JUDGES) * len(MODELS))
    assert {c["text"] for c in gsm} == {"50.0"}


def test_sample_cap_is_noted_and_covers_every_file(tmp_path):
    run = build_run(tmp_path / "run")
    html = write_report(run, max_samples=5).read_text()
    data = sample_data(html)
    assert len(data["samples"]) == 5 and data["total"] == 16
    assert 'id="sample-cap"' in html and "Showing 5 of 16" in html
    assert len({(s["model"], s["benchmark"]) for s in data["samples"]}) == 4


def test_cli_report_default_and_output(tmp_path, capsys):
    run = build_run(tmp_path / "run", stages=("generate", "build_sft"), eval_dir=False)
    assert main(["-q", "report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert (run / "report.html").stat().st_size > 0
    out = tmp_path / "x" / "page.html"
    assert main(["-q", "report", str(run), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_cli_not_a_run_dir(tmp_path, capsys, make):
    target = tmp_path / "target"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    assert main(["-q", "report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is not a run dir" in err and "\n" not in err
    assert not (tmp_path / "target" / "report.html").exists()


def test_run_ends_with_the_report_and_survives_its_failure(tmp_path, monkeypatch, capsys, caplog):
    from safetrigger import stages

    def fake_stage(cfg, store):
        store.begin_stage("generate", {}, {})
        stats = {"rows": 2, "per_category": {}}
        store.finish_stage("generate", stats)
        return stats

    monkeypatch.setitem(stages.STAGES, "fake", fake_stage)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\nstages: [fake]\n")
    assert main(["run", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'run' / 'report.html'}" in out
    assert (tmp_path / "run" / "report.html").is_file()

    import safetrigger.report as report

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "write_report", broken)
    assert main(["run", str(cfg)]) == 0
    assert "report not written (RuntimeError: boom)" in caplog.text


def test_long_texts_are_clipped_and_max_samples_zero(tmp_path):
    run = build_run(tmp_path / "run")
    f = run / "eval" / "generations" / "st-d" / "xstest.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    rows[0]["answer"] = "x" * 30_000
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = sample_data(write_report(run).read_text())
    clipped = next(s for s in data["samples"] if s["model"] == "st-d" and s["id"] == rows[0]["id"] and s["benchmark"] == "xstest")
    assert clipped["answer"].startswith("x" * 20_000) and clipped["answer"].endswith("[10000 more characters in the generations file]")
    html = write_report(run, max_samples=0).read_text()
    assert 'id="sample-data"' not in html and "16 generations, none embedded" in html
