"""benchmarks/record.py: suites merge into results.json and RESULTS.md."""

import importlib.util
import json
import sys

from rlcv_lib.notebook import repo_root


def _record_module(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("record", repo_root() / "benchmarks/record.py")
    record = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "record", record)  # dataclasses look their module up
    spec.loader.exec_module(record)
    monkeypatch.setattr(record, "RESULTS_JSON", tmp_path / "results.json")
    monkeypatch.setattr(record, "RESULTS_MD", tmp_path / "RESULTS.md")
    return record


def test_suites_merge_and_replace(tmp_path, monkeypatch):
    record = _record_module(tmp_path, monkeypatch)
    a = record.Suite("alpha", "first")
    a.add("ours", 10.0, "items/s", reference="naive", ratio=5.0, target=">= 2x", met=True)
    a.finish(save=True)
    b = record.Suite("beta", "second")
    b.add("slow", 1.0, "items/s", target=">= 2x", met=False)
    b.finish(save=True)
    a2 = record.Suite("alpha", "first again")
    a2.add("ours", 12.0, "items/s", ratio=6.0)
    a2.finish(save=True)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert sorted(doc["suites"]) == ["alpha", "beta"]
    alpha = doc["suites"]["alpha"]
    assert alpha["title"] == "first again" and alpha["measurements"][0]["value"] == 12.0
    for key in ("machine", "date", "commit"):
        assert alpha[key]
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| ours | 12 | items/s |  | 6 |  |  |" in md
    assert "| slow | 1 | items/s |  |  | >= 2x | **no** |" in md
