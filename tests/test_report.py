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
    # a value the fixture makes differ between judges shows differently in the two tables
    assert cells[("base", "advbench", "refusal-minilm")]["text"] == "50.0"
    assert cells[("base", "advbench", "llm-rubric")]["text"] == "75.0"


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
