import json

import pytest

from safetrigger.errors import DataError, SafeTriggerError
from safetrigger.jsonl import read_jsonl
from safetrigger.runstore import RunStore


def test_append_skips_nothing_and_refuses_duplicates(tmp_path):
    sf = RunStore(tmp_path).stage("generate")
    assert sf.append([{"id": "a", "x": 1}, {"id": "b", "x": 2}]) == 2
    assert sf.done_ids() == {"a", "b"}
    with pytest.raises(SafeTriggerError, match="duplicate id 'a'"):
        sf.append([{"id": "a"}])
    assert [r["id"] for r in RunStore(tmp_path).stage("generate").rows()] == ["a", "b"]


def test_torn_last_line_is_cut_then_resumed(tmp_path):
    store = RunStore(tmp_path)
    sf = store.stage("generate")
    sf.append([{"id": "a"}, {"id": "b"}])
    with sf.path.open("a") as f:
        f.write('{"id": "c", "text": "half wri')  # what a kill mid-write leaves
    fresh = store.stage("generate")
    assert fresh.done_ids() == {"a", "b"}  # the torn row does not count as done
    fresh.append([{"id": "c", "text": "whole"}])
    rows = [json.loads(line) for line in sf.path.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[-1]["text"] == "whole"


def test_malformed_middle_line_names_the_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"line 2 of .*x.jsonl is not valid JSON"):
        list(read_jsonl(p, repair_tail=True))
    with pytest.raises(DataError, match="file not found"):
        list(read_jsonl(tmp_path / "missing.jsonl"))
    q = tmp_path / "noid.jsonl"
    q.write_text('{"x": 1}\n')
    from safetrigger.runstore import StageFile

    with pytest.raises(DataError, match="has no 'id' field"):
        StageFile(q).done_ids()


def test_manifest_and_changed_settings_are_refused(tmp_path):
    store = RunStore(tmp_path)
    store.begin_stage("generate", {"k": 1}, {"temperature": 0.0})
    store.update_stage("generate", model={"name": "m"})
    store.finish_stage("generate", {"rows": 3})
    m = store.manifest()
    assert m["stages"]["generate"]["status"] == "done" and m["stages"]["generate"]["model"] == {"name": "m"}
    assert "torch" in m["versions"] and "python" in m["versions"]
    import resource

    peak = m["stages"]["generate"]["peak_rss_mib"]  # the process's high-water mark, in MiB
    assert 10 < peak <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + 1
    assert store.is_done("generate")
    assert json.loads(store.stats_path("generate").read_text()) == {"rows": 3}
    store.begin_stage("generate", {"k": 1}, {"temperature": 0.0})  # same settings: resumes
    with pytest.raises(SafeTriggerError, match=r"other settings \(changed: temperature\)"):
        store.begin_stage("generate", {"k": 1}, {"temperature": 0.7})


def test_corrupt_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(DataError, match="manifest.json is not valid JSON"):
        RunStore(tmp_path).manifest()
