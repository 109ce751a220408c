"""The command line: help, and one-line errors for bad input (exit status 2, no traceback)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from safetrigger.cli import main, split_overrides

ROOT = Path(__file__).parent.parent


def test_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "safetrigger", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "generate", "trigger", "build-sft", "sft", "activation", "config", "data", "model", "judge", "compare"):
        assert re.search(rf"^\s+{cmd}\s", out, re.M), cmd


@pytest.mark.parametrize("sub", ["run", "generate", "config", "data", "model", "judge"])
def test_every_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0
    assert "usage: safetrigger" in capsys.readouterr().out


def test_split_overrides():
    assert split_overrides(["run", "c.yaml", "--generation.batch_size", "3", "--run_dir=x"]) == (
        ["run", "c.yaml"], ["--generation.batch_size", "3", "--run_dir=x"])
    assert split_overrides(["-q", "run", "c.yaml"]) == (["-q", "run", "c.yaml"], [])


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_config_key(capsys):
    err = _error(capsys, ["generate", str(ROOT / "configs/demo.yaml"), "--generation.batchsize", "8"])
    assert "unknown config key 'generation.batchsize'" in err and "generation.batch_size" in err


def test_missing_dataset_file(capsys, tmp_path):
    err = _error(capsys, ["generate", "--run_dir", str(tmp_path), "--data.pool", "{'harmful=/no/such/file.jsonl': 2}"])
    assert "file not found: /no/such/file.jsonl" in err


def test_unknown_set(capsys, tmp_path):
    err = _error(capsys, ["generate", "--run_dir", str(tmp_path), "--data.pool", "{'harmfull:train': 2}"])
    assert "unknown query set 'harmfull:train'" in err and "did you mean 'harmful:train'" in err


def test_query_file_line_not_json(capsys, tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"text": "fine"}\n{broken\n')
    err = _error(capsys, ["generate", "--run_dir", str(tmp_path / "r"), "--data.pool", json.dumps({f"harmful={f}": 0})])
    assert f"line 2 of {f} is not valid JSON" in err


def test_stage_file_line_not_json(capsys, tmp_path, tiny_model_dir):
    run = tmp_path / "r"
    run.mkdir()
    (run / "generate.jsonl").write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    err = _error(capsys, ["generate", "--run_dir", str(run), "--model.name_or_path", str(tiny_model_dir)])
    assert "line 2 of" in err and "generate.jsonl is not valid JSON" in err


def test_model_path_missing(capsys, tmp_path):
    err = _error(capsys, ["generate", "--run_dir", str(tmp_path), "--model.name_or_path", "/no/such/model",
                          "--data.pool", "{'general:train': 1}"])
    assert "model path not found: /no/such/model" in err


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", str(ROOT / "configs/demo.yaml"), "--generation.batch_size", "7"]) == 0
    assert "batch_size: 7" in capsys.readouterr().out


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^harmful:train\s+\d+$", out, re.M)
    for group in ("harmful", "jailbreak", "general", "overrefusal", "advbench"):
        assert re.search(rf"^{group}:dev\s+\d+$", out, re.M), group  # every category shows its dev part
    sizes = dict(line.split() for line in out.splitlines())
    assert int(sizes["general:train"]) >= 150 and int(sizes["general:eval"]) >= 150 and int(sizes["general:dev"]) >= 50


def test_readme_and_ci_run_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```(?:bash|sh)?\n(.+?)\n```", readme, re.S)[:2]
    assert len(commands) == 2, "README must open with two commands"
    assert commands[1].strip() in ci
