"""The report in a real browser (headless Chromium through Playwright, the system `chromium`, no
browser download): figures have a size, the sample browser's filters change what is shown,
a sample's think / safe / answer parts are visible and look different, nothing is fetched."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from report_fixture import HOSTILE, build_run

from safetrigger.report import write_report

CHROMIUM = os.environ.get("SAFETRIGGER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")

PLOTS = ["plot-asr", "plot-activation", "plot-tradeoff", "plot-reward", "plot-lengths"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.requests, page.errors = [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(path.as_uri())
    return page


def shown(page) -> int:
    n = page.locator(".sample").count()
    assert page.locator("#sample-count").get_attribute("data-count") == str(n)
    return n


def test_report_in_chromium(browser, tmp_path):
    run = build_run(tmp_path / "run")
    page = open_page(browser, write_report(run))
    assert page.errors == []
    assert [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))] == []

    for pid in PLOTS:
        box = page.locator(f"#{pid} svg").first.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 50, pid

    samples = json.loads(page.locator("#sample-data").text_content())["samples"]

    def expected(model="", bench="", verdict=""):
        judge, _, out = verdict.rpartition("|")
        return sum((not model or s["model"] == model) and (not bench or s["benchmark"] == bench)
                   and (not verdict or (s["verdicts"].get(judge) or {}).get("outcome") == out) for s in samples)

    assert shown(page) == len(samples) == 16
    page.select_option("#filter-model", "st-d")
    assert shown(page) == expected("st-d") == 8
    page.select_option("#filter-benchmark", "advbench")
    assert shown(page) == expected("st-d", "advbench") == 4
    assert {page.locator(".sample").nth(i).get_attribute("data-model") for i in range(4)} == {"st-d"}
    page.select_option("#filter-verdict", "refusal-minilm|unsafe")
    assert shown(page) == expected("st-d", "advbench", "refusal-minilm|unsafe") == 1
    page.select_option("#filter-model", "")
    assert shown(page) == expected("", "advbench", "refusal-minilm|unsafe") == 3
    page.select_option("#filter-verdict", "llm-rubric|no_answer")
    assert shown(page) == expected("", "advbench", "llm-rubric|no_answer") == 2
    page.select_option("#filter-verdict", "")
    page.select_option("#filter-benchmark", "")

    # one sample's three parts: visible, labelled, on different backgrounds
    card = page.locator(".sample", has=page.locator(".part-safe:not(.empty)")).first
    colors = set()
    for part in ("think", "safe", "answer"):
        el = card.locator(f".part-{part}")
        assert el.is_visible(), part
        assert el.locator(".plabel").text_content() == part
        colors.add(el.evaluate("e => getComputedStyle(e).backgroundColor"))
    assert len(colors) == 3
    assert "safety analysis" in card.locator(".part-safe .text").text_content()

    # model output is shown as text, never run
    assert page.evaluate("() => window.PWNED") is None
    assert page.get_by_text(HOSTILE, exact=True).count() == sum(s["answer"] == HOSTILE for s in samples) == 2

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    page.close()


def test_report_without_eval_in_chromium(browser, tmp_path):
    run = build_run(tmp_path / "run", stages=("generate",), eval_dir=False)
    page = open_page(browser, write_report(run))
    assert page.errors == []  # the JS copes with no sample browser
    assert page.locator("#results-table").inner_text().startswith("eval not run: safetrigger eval CONFIG")
    assert page.locator("#sample-browser").is_visible()
    assert page.locator("#stage-trigger").inner_text().count("not run") >= 1
    page.close()
