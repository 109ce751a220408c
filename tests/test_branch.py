"""`safetrigger branch`: a new run dir that starts from another run's finished stages.

The end-to-end test runs stage 1 and sampling once on a tiny random model (answers scripted as in
test_pipeline_stage2), branches at build-dpo, and runs the new config with every stage listed:
the copied stages must be accepted as they are (no generation at all), the later ones redone.
"""

import json
import shlex

import pytest

import safetrigger.generation as generation
from safetrigger.branch import STAGE_OUTPUTS, branch_run
from safetrigger.cli import main
from safetrigger.config import load_config
from safetrigger.errors import SafeTriggerError
from safetrigger.runstore import RunStore, fingerprint
from safetrigger.stages import STAGES
from safetrigger.training.runner import SETTINGS as TRAIN_SETTINGS
from test_pipeline_stage2 import scripted, tiny_run_args  # noqa: F401  (scripted: a fixture)

STAGE_ORDER = "[generate, trigger, build-sft, sft, sample, score, build-dpo, dpo]"


def test_every_stage_says_what_it_writes():
    assert set(STAGE_OUTPUTS) == set(STAGES)


def test_a_branch_reuses_stage_one_and_samples_and_redoes_the_rest(tiny_model_dir, tmp_path, scripted, monkeypatch, capsys):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["-q", "run", *tiny_run_args(tiny_model_dir, a, STAGE_ORDER, dpo_steps=1)]) == 0
    a_manifest = (a / "manifest.json").read_text()
    a_samples = (a / "sample.jsonl").read_text()

    # The new config changes a DPO setting only (a sweep point): two steps instead of one.
    b_args = tiny_run_args(tiny_model_dir, b, STAGE_ORDER, dpo_steps=2)
    capsys.readouterr()
    assert main(["-q", "branch", "--from-run", str(a), "--at", "build-dpo", *b_args]) == 0
    # The printed next command pastes into a shell as it is: values with spaces stay one argument.
    next_line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("next: "))
    assert shlex.split(next_line.removeprefix("next: ").split(" (the stages from")[0]) == ["safetrigger", "run", *b_args]
    assert (a / "manifest.json").read_text() == a_manifest  # the source is left as it was
    assert (b / "sample.jsonl").read_text() == a_samples and (b / "sft").is_dir()
    assert not (b / "dpo.jsonl").exists() and not (b / "dpo").exists()  # from --at on: not copied
    m = RunStore(b).manifest()
    assert list(m["stages"]) == ["generate", "trigger", "build_sft", "sft", "sample", "score"]
    assert m["branched_from"]["run_dir"] == str(a) and m["branched_from"]["at"] == "build-dpo"
    sample = m["stages"]["sample"]
    assert str(a) not in json.dumps(sample["settings"]) and str(b) in json.dumps(sample["settings"])
    assert sample["fingerprint"] == fingerprint(sample["settings"])

    def no_generation(*args, **kwargs):
        raise AssertionError("a copied stage generated again")

    monkeypatch.setattr(generation, "make_backend", no_generation)
    assert main(["-q", "run", *b_args]) == 0
    store = RunStore(b)
    assert all(store.is_done(s) for s in ("sample", "score", "build_dpo", "dpo"))
    assert (b / "sample.jsonl").read_text() == a_samples
    assert json.loads((b / "dpo" / "train_stats.json").read_text())["steps"] == 2
    assert json.loads((a / "dpo" / "train_stats.json").read_text())["steps"] == 1


def _fake_run(run_dir, statuses: dict) -> None:
    """A run dir with a manifest and one file per stage output, no model needed."""
    run_dir.mkdir(parents=True)
    stages = {}
    for stage, status in statuses.items():
        settings = {"model": {"name_or_path": f"{run_dir}/sft/model"}}
        stages[stage.replace("-", "_")] = {"status": status, "settings": settings, "fingerprint": fingerprint(settings)}
        for pattern in STAGE_OUTPUTS[stage]:
            name = pattern.format(sft="sft", dpo="dpo", eval="eval").replace("*", "0-of-2.jsonl")
            if pattern.startswith("{"):
                (run_dir / name).mkdir()
                (run_dir / name / "weights.bin").write_text(stage)
            else:
                (run_dir / name).write_text(stage)
    (run_dir / "manifest.json").write_text(json.dumps({"config": {"run_dir": str(run_dir)}, "stages": stages}))


def test_a_branch_copies_only_the_stages_before_at_and_moves_their_paths(tmp_path):
    src = tmp_path / "src"
    _fake_run(src, {s: "done" for s in ("generate", "trigger", "build-sft", "sft", "sample", "score", "build-dpo", "dpo", "eval")})
    cfg = load_config(None, ["--run_dir", str(tmp_path / "dst")])
    out = branch_run(src, cfg, "sample")
    assert out["stages"] == ["generate", "trigger", "build-sft", "sft"]
    dst = tmp_path / "dst"
    assert sorted(p.name for p in dst.iterdir()) == sorted([
        "build_sft.stats.json", "generate.jsonl", "generate.shard-0-of-2.jsonl", "generate.stats.json", "manifest.json",
        "sft", "sft.jsonl", "sft.stats.json", "sft_dropped.jsonl", "trigger.jsonl", "trigger.shard-0-of-2.jsonl",
        "trigger.stats.json"])
    assert (dst / "sft" / "weights.bin").read_text() == "sft"
    m = RunStore(dst).manifest()
    assert m["stages"]["sft"]["settings"]["model"]["name_or_path"] == f"{dst}/sft/model"
    assert m["config"]["run_dir"] == str(dst)


def test_a_branch_moves_a_copied_training_dirs_own_settings(tmp_path):
    """Branching after DPO copies its dir, whose train_settings.json names the ST-S it trained on:
    the trainer would refuse it as 'made with other settings' unless that path moves too."""
    src = tmp_path / "src"
    _fake_run(src, {s: "done" for s in ("generate", "trigger", "build-sft", "sft", "sample", "score", "build-dpo", "dpo")})
    settings = {"dataset_sha256": "ab", "model": {"name_or_path": f"{src}/sft/model"}, "dpo": {"beta": 0.1}}
    (src / "dpo" / TRAIN_SETTINGS).write_text(json.dumps({"fingerprint": fingerprint(settings), "settings": settings}))
    dst = tmp_path / "dst"
    branch_run(src, load_config(None, ["--run_dir", str(dst)]), "eval")
    moved = json.loads((dst / "dpo" / TRAIN_SETTINGS).read_text())
    assert moved["settings"]["model"]["name_or_path"] == f"{dst}/sft/model"
    assert moved["settings"]["dpo"] == {"beta": 0.1} and moved["fingerprint"] == fingerprint(moved["settings"])
    assert json.loads((src / "dpo" / TRAIN_SETTINGS).read_text())["settings"] == settings  # the source is left as it was


@pytest.mark.parametrize("case, message", [
    ("unknown stage", "is not a stage"),
    ("unfinished", "not finished"),
    ("target not empty", "not empty"),
    ("same dir", "is the source run dir"),
    ("no manifest", "no manifest.json"),
])
def test_a_branch_refuses_what_it_cannot_copy_faithfully(tmp_path, case, message):
    src = tmp_path / "src"
    _fake_run(src, {"generate": "done", "trigger": "running"})
    dst = tmp_path / "dst"
    at = "sft"
    if case == "unknown stage":
        at = "finetune"
    elif case == "unfinished":
        pass  # trigger is still running in the source
    else:
        at = "trigger"
        if case == "target not empty":
            dst.mkdir()
            (dst / "generate.jsonl").write_text("{}\n")
        elif case == "same dir":
            dst = src
        elif case == "no manifest":
            (src / "manifest.json").unlink()
    with pytest.raises(SafeTriggerError, match=message):
        branch_run(src, load_config(None, ["--run_dir", str(dst)]), at)
