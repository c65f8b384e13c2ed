"""results.json / RESULTS.md gathering, and the manifest runner's pieces that need no kernel."""

import json

import pytest

from rlcv_lib import notebook, reproduce, results


def _fragment(tmp_path, name, entries):
    ctx = notebook.setup(name, preset="smoke", workdir=str(tmp_path / "w"),
                         figures_dir=str(tmp_path / "f"))
    for e in entries:
        ctx.record(**e)
    ctx.finish()
    return ctx.figures


def test_collect_in_manifest_order_with_run_facts(tmp_path):
    figures = _fragment(tmp_path, "b_nb", [dict(task="det", metric="mAP", mle=1.0, tuned=2.0,
                                                paper_mle=39.0, paper_tuned=54.0)])
    _fragment(tmp_path, "a_nb", [dict(task="world", metric="n", value=7)])
    doc = results.write(figures, order=["b_nb", "a_nb"], timings={"b_nb": 12.5})
    assert [e["notebook"] for e in doc["entries"]] == ["b_nb", "a_nb"]
    e = doc["entries"][0]
    assert (e["preset"], e["seed"], e["paper_tuned"]) == ("smoke", 0, 54.0)
    assert doc["notebooks"][0]["seconds"] == 12.5
    assert "CPU cores" in doc["machine"]
    assert json.loads((figures / "results.json").read_text()) == doc
    md = (figures / "RESULTS.md").read_text()
    assert "| det | mAP | 1 | 2 |  | 39 | 54 | b_nb |" in md
    assert "Smoke preset: a plumbing check" in md  # smoke numbers say so
    assert doc["notebooks"][0]["machine"] == results.machine_description()


def test_results_say_which_commits_the_runs_come_from(tmp_path):
    figures = _fragment(tmp_path, "a_nb", [dict(task="w", metric="n", value=1)])
    _fragment(tmp_path, "b_nb", [dict(task="w", metric="m", value=2)])
    path = figures / "results" / "b_nb.json"
    frag = json.loads(path.read_text())
    path.write_text(json.dumps({**frag, "commit": "abc1234"}))
    doc = results.write(figures, order=["a_nb", "b_nb"])
    md = (figures / "RESULTS.md").read_text()
    assert "The runs themselves come from 2 commits" in md and "`abc1234`" in md
    assert f"| b_nb | `abc1234` | {doc['notebooks'][1]['machine']} |" in md


def test_missing_fragment_is_an_error(tmp_path):
    figures = _fragment(tmp_path, "a_nb", [dict(task="w", metric="n", value=1)])
    with pytest.raises(FileNotFoundError, match="absent_nb"):
        results.collect(figures, order=["a_nb", "absent_nb"])


def test_manifest_parsing_rejects_bad_entries(tmp_path):
    good = tmp_path / "m.toml"
    good.write_text('[[notebook]]\nname = "x"\nfigures = ["a.png"]\nresults = ["t/m"]\n')
    assert reproduce.load_manifest(good)[0].figures == ("a.png",)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[notebook]]\nname = "x"\nfigure = ["a.png"]\n')
    with pytest.raises(ValueError, match="figure"):
        reproduce.load_manifest(bad)
    dup = tmp_path / "dup.toml"
    dup.write_text('[[notebook]]\nname = "x"\n[[notebook]]\nname = "x"\n')
    with pytest.raises(ValueError, match="duplicate"):
        reproduce.load_manifest(dup)


def test_default_dirs_keep_figures_for_cpu_only(tmp_path):
    assert reproduce.default_dirs("cpu", tmp_path) == (tmp_path / "runs/cpu", tmp_path / "figures")
    assert reproduce.default_dirs("smoke", tmp_path)[1] == tmp_path / "runs/smoke/figures"


def test_the_machine_names_its_cpu_model_where_linux_tells():
    from pathlib import Path

    from rlcv_lib import results

    model = results.cpu_model()
    if Path("/proc/cpuinfo").exists():
        assert model.endswith(("AVX-512", "no AVX-512")) and model in results.machine_description()
