"""Progress bars: named after the stage, shown for judging, silenced by -q or SAFETRIGGER_QUIET=1."""

from __future__ import annotations

import pytest

from safetrigger.cli import main
from safetrigger.config import GenerationConfig, ModelConfig
from safetrigger.judges import Judge, JudgeItem, Verdict
from safetrigger.progress import progress_bar, quiet


@pytest.fixture(autouse=True)
def not_quiet(monkeypatch):
    monkeypatch.delenv("SAFETRIGGER_QUIET", raising=False)


@pytest.mark.parametrize("value, off", [("1", True), ("true", True), ("0", False), ("", False)])
def test_quiet_env(monkeypatch, value, off):
    monkeypatch.setenv("SAFETRIGGER_QUIET", value)
    assert quiet() is off
    with progress_bar(total=3, desc="x") as bar:
        assert bar.disable is off


class CountingJudge(Judge):
    name = "counting"
    batch_size = 2

    def __init__(self):
        self.calls = []

    @property
    def identity(self):
        return "counting@test"

    def _judge(self, items):
        self.calls.append(len(items))
        return [Verdict(unsafe=it.answer == "bad", label=it.id, score=None, raw="", judge=self.identity) for it in items]


def test_judging_in_blocks_keeps_order_and_shows_a_bar(capsys):
    items = [JudgeItem("q", "bad" if i % 3 == 0 else "ok", str(i)) for i in range(40)]
    j = CountingJudge()
    out = j.judge(items)
    assert [v.label for v in out] == [str(i) for i in range(40)]
    assert [v.unsafe for v in out] == [i % 3 == 0 for i in range(40)]
    assert j.calls == [16, 16, 8]  # blocks of PROGRESS_BATCHES (8) batches of 2
    assert "judge counting" in capsys.readouterr().err
    small = CountingJudge()
    small.judge(items[:16])
    assert small.calls == [16] and "judge counting" not in capsys.readouterr().err


def test_judge_bar_silenced_by_env(monkeypatch, capsys):
    monkeypatch.setenv("SAFETRIGGER_QUIET", "1")
    CountingJudge().judge([JudgeItem("q", "ok", str(i)) for i in range(40)])
    assert "judge counting" not in capsys.readouterr().err


def test_generation_bar_names_the_stage(tiny_model_dir, capsys):
    from safetrigger.generation import SamplingParams, make_backend
    from safetrigger.models import load_model

    loaded = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", template="chatml"))
    be = make_backend(loaded, GenerationConfig(batch_size=2), desc="activation")
    be.complete(["a", "b", "c"], SamplingParams(max_new_tokens=2))
    err = capsys.readouterr().err
    assert "activation" in err and "3/3" in err and "generate" not in err


@pytest.mark.parametrize("argv, env, off", [(["-q"], "0", True), ([], "1", True), ([], "0", False)])
def test_quiet_switches_reach_the_stages(tmp_path, monkeypatch, argv, env, off):
    from safetrigger import stages

    seen = {}

    def fake(cfg, store):
        seen["progress"] = cfg.generation.progress
        seen["quiet"] = quiet()
        return {"rows": 0}

    monkeypatch.setitem(stages.STAGES, "generate", fake)
    monkeypatch.setenv("SAFETRIGGER_QUIET", env)  # restored after the test (main sets it)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert main(argv + ["generate", "--run_dir", str(tmp_path / "run")]) == 0
    assert seen == {"progress": not off, "quiet": off}
