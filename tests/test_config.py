import dataclasses
import typing

import pytest

from safetrigger.config import RunConfig, explain, load_config, parse_overrides
from safetrigger.errors import ConfigError


def _all_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield cls, f
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _all_fields(hints[f.name])


def test_every_field_has_a_help_line():
    missing = [f"{c.__name__}.{f.name}" for c, f in _all_fields(RunConfig) if not f.metadata.get("help")]
    assert missing == []


def test_yaml_plus_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("run_dir: runs/x\ngeneration:\n  batch_size: 4\n  temperature: 0.7\n")
    cfg = load_config(p, ["--generation.batch_size", "16", "model.dtype=float32", "--generation.stop", "[a, b]"])
    assert cfg.run_dir == "runs/x"
    assert cfg.generation.batch_size == 16 and cfg.generation.temperature == 0.7
    assert cfg.model.dtype == "float32"
    assert cfg.generation.stop == ["a", "b"]


def test_dict_override_replaces_pool():
    cfg = load_config(None, ["--data.pool", "{'harmful:train': 3}"])
    assert cfg.data.pool == {"harmful:train": 3}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--generation.batchsize", "3"], "unknown config key 'generation.batchsize' (did you mean 'generation.batch_size'?)"),
        (["--generation.batch_size", "abc"], "config key 'generation.batch_size' must be an integer"),
        (["--generation.batch_size", "2.5"], "must be an integer"),
        (["--model.merge_adapter", "maybe"], "must be true or false"),
        (["--model", "x"], "must be a mapping of ModelConfig fields"),
        (["--generation.batch_size"], "needs a value"),
        (["loose"], "cannot parse override 'loose'"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at top level"):
        load_config(lst)


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b", "3", "--c=x", "d.e=true"]) == {"a": {"b": 3}, "c": "x", "d": {"e": True}}


def test_explain_lists_leaf_fields():
    lines = explain()
    assert any(line.startswith("generation.batch_size = 32") for line in lines)
    assert not any(line.startswith("generation =") for line in lines)


def test_demo_config_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "configs" / "demo.yaml")
    assert cfg.model.name_or_path == "embedded"
    assert cfg.stages[0] == "generate"


def test_override_of_a_mapping_field_replaces_it_while_sections_merge(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("eval:\n  benchmarks: {advbench: 100, general: 100}\n  temperature: 0.7\ndata:\n  pool: {general:train: 5}\n")
    cfg = load_config(p, ["--eval.benchmarks", "{advbench:dev: 50}", "--data.seed", "3"])
    assert cfg.eval.benchmarks == {"advbench:dev": 50}  # replaced: no eval benchmark slips into a dev run
    assert cfg.eval.temperature == 0.7 and cfg.data.pool == {"general:train": 5} and cfg.data.seed == 3


def test_every_shipped_pipeline_config_loads():
    """configs/*.yaml, baselines, dev recipes and paper recipes resolve offline (accelerate's own
    configs are not ours to load)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs"
    paths = sorted(p for p in root.rglob("*.yaml") if "accelerate" not in p.parts)
    assert any("dev" in p.parts for p in paths) and any("baselines" in p.parts for p in paths)
    for p in paths:
        cfg = load_config(str(p), [])
        assert cfg.run_dir and cfg.stages, p
