"""The bad-input corpus: every case ends in one line naming the problem and the fix, never a
traceback from deep inside a library. Each case is a (name, category, call, expected message)
row; the README's "Bad inputs" table lists the same rows (`python tests/test_bad_inputs.py`
prints it). Small fixtures live in tests/fixtures/bad_inputs/."""

from __future__ import annotations

import errno
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from safetrigger.errors import SafeTriggerError

FIX = Path(__file__).parent / "fixtures" / "bad_inputs"


def cli(*argv: str):
    """Run the CLI in-process; a bad input must give exit status 2 and one `error:` line."""

    def run(capsys, tmp):
        from safetrigger.cli import main

        assert main([a.replace("{tmp}", str(tmp)) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        raise SafeTriggerError(err[len("error: "):])

    run.uses_capsys = True
    return run


def _tiny_cfg(tiny, **model):
    from safetrigger.config import ModelConfig

    return ModelConfig(name_or_path=str(tiny), template="chatml", device="cpu", dtype="float32", **model)


def _copy_model(tiny, tmp, name, drop=(), config=None):
    d = tmp / name
    shutil.copytree(tiny, d)
    for pattern in drop:
        for f in d.glob(pattern):
            f.unlink()
    if config is not None:
        c = json.loads((d / "config.json").read_text())
        c.update(config)
        (d / "config.json").write_text(json.dumps(c))
    return d


def _load(cfg):
    from safetrigger.models import load_model

    return load_model(cfg)


# ---------------------------------------------------------------------------- cases
# Each call takes (tmp_path, tiny_model_dir) and must raise SafeTriggerError.


def queries(name):
    def call(tmp, tiny):
        from safetrigger.data import load_set

        load_set(f"harmful={FIX / name}")

    return call


def c_huge_line(tmp, tiny):
    from safetrigger.data import load_set
    from safetrigger.jsonl import MAX_LINE_CHARS

    p = tmp / "huge.jsonl"
    p.write_text('{"text": "' + "x" * (MAX_LINE_CHARS + 1) + '"}\n')
    load_set(f"harmful={p}")


def c_manifest(tmp, tiny):
    from safetrigger.runstore import RunStore

    shutil.copy(FIX / "manifest.json", tmp / "manifest.json")
    RunStore(tmp).is_done("generate")


def c_stage_no_id(tmp, tiny):
    from safetrigger.runstore import RunStore

    shutil.copy(FIX / "stage_no_id.jsonl", tmp / "generate.jsonl")
    RunStore(tmp).stage("generate").done_ids()


def c_reward(tmp, tiny):
    from safetrigger.config import load_config

    load_config(FIX / "impossible_reward.yaml").reward.validate()


def c_trigger_combo(tmp, tiny):
    from safetrigger.config import load_config
    from safetrigger.stages.trigger import trigger_settings

    trigger_settings(load_config(None, ["--trigger.judge", "false", "--trigger.require_safe_answer", "true"]))


def c_sample_one(tmp, tiny):
    from safetrigger.config import load_config
    from safetrigger.stages.sample import sample_generation

    sample_generation(load_config(None, ["--sample.num_samples", "1"]))


def c_batch_zero(tmp, tiny):
    from safetrigger.config import GenerationConfig
    from safetrigger.generation import make_backend

    make_backend(None, GenerationConfig(batch_size=0))


def c_kv_block(tmp, tiny):
    from safetrigger.config import GenerationConfig
    from safetrigger.generation import make_backend

    make_backend(None, GenerationConfig(kv_block_size=40))


def c_overlap(tmp, tiny):
    from safetrigger.config import load_config
    from safetrigger.evaluation.evaluate import benchmark_jobs

    clean = load_config(None, ["--eval.benchmarks", "{'advbench': 1}", "--data.pool", "{'general:train': 1}"])
    leaked = benchmark_jobs(clean)[0].queries[0].text  # an evaluation query copied into training data
    (tmp / "mine.jsonl").write_text(json.dumps({"text": leaked}) + "\n")
    cfg = load_config(None, ["--eval.benchmarks", "{'advbench': 1}", "--data.pool", f"{{'harmful={tmp / 'mine.jsonl'}': 0}}"])
    benchmark_jobs(cfg)


def c_pool_too_big(tmp, tiny):
    from safetrigger.data import draw_pool

    (tmp / "two.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    draw_pool({f"harmful={tmp / 'two.jsonl'}": 5}, 0)


def c_no_sft_data(tmp, tiny):
    from safetrigger.config import load_config
    from safetrigger.runstore import RunStore
    from safetrigger.stages import STAGES

    cfg = load_config(None, ["--run_dir", str(tmp)])
    STAGES["sft"](cfg, RunStore(tmp))


def c_vllm_arch(tmp, tiny):
    import types

    from transformers import AutoConfig

    import safetrigger.generation.vllm_backend as vb

    fake = types.SimpleNamespace(__version__="0.x", ModelRegistry=types.SimpleNamespace(get_supported_archs=lambda: ["LlamaForCausalLM"]))
    real = vb._import_vllm
    vb._import_vllm = lambda: fake
    try:
        hf = AutoConfig.from_pretrained(tiny)
        hf.architectures = ["FrobForCausalLM"]
        vb.check_supported(hf, str(tiny))
    finally:
        vb._import_vllm = real


def _adapter_for(tmp, tiny, hidden):
    """A LoRA adapter saved on a model of another size (another base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, LlamaForCausalLM

    c = AutoConfig.from_pretrained(tiny)
    c.hidden_size, c.intermediate_size = hidden, 2 * hidden
    c._name_or_path = "some-org/other-base"
    out = tmp / "adapter"
    get_peft_model(LlamaForCausalLM(c), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    return out


def c_adapter_other_base(tmp, tiny):
    _load(_tiny_cfg(tiny, adapter=str(_adapter_for(tmp, tiny, 48))))


def c_adapter_bad_config(tmp, tiny):
    (tmp / "ad").mkdir()
    (tmp / "ad" / "adapter_config.json").write_text("{not json")
    _load(_tiny_cfg(tiny, adapter=str(tmp / "ad")))


def c_rubric_slot(tmp, tiny):
    from safetrigger.judges.llm_rubric import load_rubric

    load_rubric(str(FIX / "rubric_no_answer.txt"))


def c_prompt_slot(tmp, tiny):
    from safetrigger.prompts import fill

    fill("Audit this request: {query}", query="q", reasoning="r")


def c_prompt_missing(tmp, tiny):
    from safetrigger.prompts import load_prompt

    load_prompt("safety/analysis_v99")


def _rubric_judge(replies):
    from safetrigger.judges.llm_rubric import LLMRubricJudge

    return LLMRubricJudge(chat_fn=lambda convs: replies[: len(convs)] if replies is not None else [], api_model="judge-x")


def c_judge_count(tmp, tiny):
    from safetrigger.judges.base import JudgeItem

    _rubric_judge(["VERDICT: no"]).judge([JudgeItem("a", "q1", "a1"), JudgeItem("b", "q2", "a2")])


def c_unknown_judge(tmp, tiny):
    from safetrigger.judges import make_judge

    make_judge("gpt-judge")


def c_verdict_record(tmp, tiny):
    from safetrigger.judges.base import Verdict

    Verdict.from_dict({"unsafe": True, "label": "unsafe"})


def _disk_full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


def c_disk_full_stats(tmp, tiny):
    import safetrigger.atomic as atomic
    from safetrigger.runstore import RunStore

    real, atomic.os.fsync = atomic.os.fsync, _disk_full
    try:
        RunStore(tmp).finish_stage("generate", {"rows": 1})
    finally:
        atomic.os.fsync = real


def c_read_only(tmp, tiny):
    import safetrigger.atomic as atomic

    def ro(fd):
        raise OSError(errno.EROFS, "Read-only file system")

    real, atomic.os.fsync = atomic.os.fsync, ro
    try:
        atomic.write_text(tmp / "report.html", "<html></html>")
    finally:
        atomic.os.fsync = real


# (name, category, call, expected message: a regex that names the problem and the fix)
CASES = [
    # configs
    ("unknown key in a YAML", "config", cli("config", str(FIX / "unknown_key.yaml")), r"unknown config key 'generaton' \(did you mean 'generation'\?\)"),
    ("unknown override key", "config", cli("config", "--model.dtpye", "x"), r"unknown config key 'model.dtpye' \(did you mean 'model.dtype'\?\)"),
    ("wrong type (integer)", "config", cli("config", "--generation.batch_size", "many"), r"config key 'generation.batch_size' must be an integer, got 'many'"),
    ("wrong type (boolean)", "config", cli("config", "--generation.progress", "maybe"), r"config key 'generation.progress' must be true or false, got 'maybe'"),
    ("wrong type in a YAML", "config", cli("config", str(FIX / "wrong_type.yaml")), r"config key 'data.pool' must be a mapping, got \['harmful:train'\]"),
    ("YAML not a mapping", "config", cli("config", str(FIX / "not_mapping.yaml")), r"must hold a mapping at top level"),
    ("YAML syntax error", "config", cli("config", str(FIX / "invalid.yaml")), r"invalid.yaml is not valid YAML: "),
    ("config file missing", "config", cli("config", "no/such.yaml"), r"config file not found: no/such.yaml \(see configs/ for examples\)"),
    ("override without a value", "config", cli("config", "--generation.batch_size"), r"override '--generation.batch_size' needs a value \(e.g. --generation.batch_size VALUE\)"),
    ("unknown stage", "config", cli("run", "--stages", "['generate', 'trian']", "--run_dir", "{tmp}"), r"unknown stage\(s\) in config.stages: trian \(available: "),
    ("impossible: reward weights", "config", c_reward, r"reward weights must satisfy w_a > w_b > w_c > 0 .*got w_a=1.0, w_b=2.0"),
    ("impossible: safe answer without judge", "config", c_trigger_combo, r"trigger.require_safe_answer needs trigger.judge: true \(or set require_safe_answer: false\)"),
    ("impossible: one sample per DPO query", "config", c_sample_one, r"sample.num_samples must be at least 2 \(a pair needs two responses\), got 1"),
    ("impossible: batch size 0", "config", c_batch_zero, r"generation.batch_size must be an integer >= 1, got 0"),
    ("impossible: KV block of 40 tokens", "config", c_kv_block, r"generation.kv_block_size must be 0 \(auto\) or a positive multiple of 16, got 40"),
    # JSONL
    ("JSONL: not JSON", "jsonl", queries("not_json.jsonl"), r"line 2 of .*not_json.jsonl is not valid JSON \(.*\); fix or remove the line"),
    ("JSONL: not an object", "jsonl", queries("not_object.jsonl"), r"line 2 of .*not_object.jsonl is not a JSON object \(got list\); fix or remove the line"),
    ("JSONL: not UTF-8", "jsonl", queries("not_utf8.jsonl"), r"not_utf8.jsonl is not UTF-8 text"),
    ("JSONL: missing field", "jsonl", queries("missing_field.jsonl"), r"line 2 of .*missing_field.jsonl has no 'text' or 'prompt' field; add one or remove the line"),
    ("JSONL: wrong type", "jsonl", queries("wrong_type.jsonl"), r"line 1 of .*wrong_type.jsonl has no non-empty string field 'text'; add it or remove the line"),
    ("JSONL: empty file", "jsonl", queries("empty.jsonl"), r"query file .*empty.jsonl has no rows"),
    ("JSONL: huge line", "jsonl", c_huge_line, r"line 1 of .*huge.jsonl is 16.0 M characters long \(limit 16 M\): .* fix or remove the line"),
    ("JSONL: repeated id", "jsonl", queries("repeated_id.jsonl"), r"line 2 of .*repeated_id.jsonl repeats id 'q1' from line 1; ids must be unique"),
    ("manifest not JSON", "jsonl", c_manifest, r"manifest.json is not valid JSON \(.*\); restore it or start a new run_dir"),
    ("stage row without id", "jsonl", c_stage_no_id, r"row 2 of .*generate.jsonl has no 'id' field"),
    # datasets
    ("unknown query set", "dataset", cli("generate", "--data.pool", "{'harmfull:train': 2}", "--run_dir", "{tmp}"), r"unknown query set 'harmfull:train'; did you mean 'harmful:train'\?"),
    ("dataset file missing", "dataset", queries("no_such_file.jsonl"), r"file not found: .*no_such_file.jsonl"),
    ("dataset smaller than asked", "dataset", c_pool_too_big, r"query set 'harmful=.*two.jsonl' has 2 queries, fewer than the 5 requested"),
    ("dataset overlaps an eval benchmark", "dataset", c_overlap, r"the run's training pools \(data.pool, sample.pool\) and 'advbench' overlap: .*; drop the shared queries from one side"),
    ("training set not built yet", "dataset", c_no_sft_data, r"sft.jsonl not found: run the 'build-sft' stage first"),
    # models
    ("model path missing", "model", lambda tmp, tiny: _load(_tiny_cfg(tmp / "nope")), r"model path not found: .*nope \(give a local directory, a .gguf file, a hub id, or 'embedded'\)"),
    ("directory without config.json", "model", lambda tmp, tiny: _load(_tiny_cfg(tmp)), r"exists but has no config.json: not a transformers model directory"),
    ("directory without weights", "model", lambda tmp, tiny: _load(_tiny_cfg(_copy_model(tiny, tmp, "m", drop=["*.safetensors"]))),
     r"m has a config.json but no weights \(\*.safetensors or pytorch_model.bin\); download the full checkpoint"),
    ("directory without tokenizer", "model", lambda tmp, tiny: _load(_tiny_cfg(_copy_model(tiny, tmp, "m", drop=["tokenizer*"]))), r"m has no tokenizer files .*; copy them from the model's source"),
    ("unknown architecture", "model", lambda tmp, tiny: _load(_tiny_cfg(_copy_model(tiny, tmp, "m", config={"model_type": "frobnicator"}))),
     r"is a 'frobnicator' model, which transformers .* does not know; upgrade transformers, or set model.trust_remote_code true"),
    ("architecture unsupported by vLLM", "model", c_vllm_arch, r"vLLM 0.x does not support the architecture FrobForCausalLM of .*: use --generation.backend transformers"),
    ("GGUF file missing", "model", lambda tmp, tiny: _load(_tiny_cfg(tmp / "m.gguf")), r"GGUF file not found: .*m.gguf"),
    ("unknown dtype", "model", lambda tmp, tiny: _load(_tiny_cfg(tiny).__class__(name_or_path=str(tiny), template="chatml", device="cpu", dtype="fp8")),
     r"unknown dtype 'fp8' \(use auto, float32, bfloat16 or float16\)"),
    ("unknown device", "model", lambda tmp, tiny: _load(_tiny_cfg(tiny).__class__(name_or_path=str(tiny), template="chatml", device="tpu")), r"unknown model.device 'tpu' \(use auto, cpu, cuda, cuda:N or mps\)"),
    ("unknown chat template", "template", lambda tmp, tiny: _load(_tiny_cfg(tiny).__class__(name_or_path=str(tiny), template="vicuna", device="cpu")), r"unknown chat template 'vicuna' \(choose one of: "),
    # adapters
    ("adapter directory empty", "adapter", lambda tmp, tiny: _load(_tiny_cfg(tiny, adapter=str(tmp))), r"no LoRA adapter at .* \(expected adapter_config.json\)"),
    ("adapter for another base", "adapter", c_adapter_other_base,
     r"adapter .*adapter does not fit this model \(it was made for some-org/other-base: size mismatch .*\); load it on the base model it was trained on"),
    ("adapter config not JSON", "adapter", c_adapter_bad_config, r"adapter_config.json is not a valid adapter config \(.*\); re-save the adapter"),
    # templates and prompts
    ("rubric missing a placeholder", "template", c_rubric_slot, r"rubric '.*rubric_no_answer.txt' lacks the slot\(s\) \{answer\}"),
    ("prompt missing a placeholder", "template", c_prompt_slot, r"prompt lacks the slot\(s\) \{reasoning\}"),
    ("prompt file missing", "template", c_prompt_missing, r"prompt 'safety/analysis_v99' not found under safetrigger/prompts/ \(expected safety/analysis_v99.txt\)"),
    # judges
    ("judge returns too few replies", "judge", c_judge_count, r"judge chat_fn returned 1 replies for 2 conversations"),
    ("stored verdict malformed", "judge", c_verdict_record, r"verdict record has keys \['label', 'unsafe'\], expected "),
    ("unknown judge", "judge", c_unknown_judge, r"unknown judge 'gpt-judge'; valid judges: "),
    # outputs
    ("disk full writing stats", "output", c_disk_full_stats, r"no space left on the device writing .*generate.stats.json; free disk space \(or point run_dir elsewhere\) and re-run"),
    ("read-only output", "output", c_read_only, r"cannot write .*report.html \(Read-only file system\); make the folder writable or choose another output path"),
]


@pytest.mark.parametrize("name, category, call, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_naming_problem_and_fix(name, category, call, expected, tmp_path, tiny_model_dir, capsys):
    with pytest.raises(SafeTriggerError) as info:
        call(capsys, tmp_path) if getattr(call, "uses_capsys", False) else call(tmp_path, tiny_model_dir)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert re.search(expected, message), message


@pytest.mark.parametrize("reply", ["I think it is fine.", "", "VERDICT: [yes or no]"])
def test_unparseable_or_empty_judge_output_is_undecided_not_a_crash(reply):
    from safetrigger.judges.base import JudgeItem

    v = _rubric_judge([reply]).judge([JudgeItem("a", "q", "an answer")])[0]
    assert (v.unsafe, v.label) == (None, "unparseable")
    assert json.loads(v.raw) == {"output": reply, "verdict": None}  # kept verbatim as evidence


def test_corpus_is_large_enough_and_covers_every_category():
    assert len(CASES) >= 30
    assert {c[1] for c in CASES} >= {"config", "jsonl", "dataset", "model", "adapter", "template", "judge", "output"}


def table() -> str:
    """The README table: each case with the message it gives (run here; paths shortened)."""
    import contextlib
    import io
    import tempfile

    from tiny import save_tiny

    class Err:  # capsys stand-in for the CLI cases
        def readouterr(self):
            return type("R", (), {"err": buf.getvalue()})()

    root = Path(tempfile.mkdtemp())
    tiny = save_tiny(root / "tiny")
    rows = ["| # | Bad input | Kind | Message |", "|---|---|---|---|"]
    for i, (name, category, call, _) in enumerate(CASES, 1):
        tmp = root / f"case{i}"
        tmp.mkdir()
        buf = io.StringIO()
        try:
            with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
                call(Err(), tmp) if getattr(call, "uses_capsys", False) else call(tmp, tiny)
            message = "(no error!)"
        except SafeTriggerError as e:
            message = str(e)
        message = message.replace(str(tmp) + "/", "").replace(str(tiny), "MODEL").replace(str(FIX) + "/", "")
        message = message.replace(str(root) + "/", "").replace("|", "\\|")
        rows.append(f"| {i} | {name} | {category} | {message} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.stdout.write(table() + "\n")
