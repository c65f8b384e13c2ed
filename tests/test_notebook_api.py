"""The notebook conventions' API: parameter validation, outputs, results fragments."""

import json
import math

import pytest

from rlcv_lib import notebook


def _setup(tmp_path, **kw):
    args = dict(preset="smoke", seed=0, workdir=str(tmp_path / "w"),
                figures_dir=str(tmp_path / "f"), overrides={})
    args.update(kw)
    return notebook.setup("nb_test", **args)


@pytest.mark.parametrize("param,value", [
    ("preset", "nope"), ("preset", 3), ("seed", -1), ("seed", "0"), ("seed", True),
    ("workdir", 5), ("figures_dir", None), ("overrides", [1]),
    ("overrides", {"run.nofield": 1}), ("overrides", {"seed": 2}),
])
def test_bad_parameter_is_named_first(tmp_path, param, value):
    with pytest.raises(notebook.ParameterError) as err:
        _setup(tmp_path, **{param: value})
    assert str(err.value).startswith(f"{param}:"), str(err.value)


@pytest.mark.parametrize("param", ["workdir", "figures_dir"])
@pytest.mark.parametrize("where", ["itself", "parent"])
def test_a_dir_that_is_a_file_is_named_and_nothing_is_made(tmp_path, param, where):
    file = tmp_path / "a_file"
    file.write_text("x")
    path = file if where == "itself" else file / "sub"
    with pytest.raises(notebook.ParameterError) as err:
        _setup(tmp_path, **{param: str(path)})
    assert str(err.value).startswith(f"{param}:") and "a_file" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # neither dir was made


@pytest.mark.parametrize("name,overrides,fields", [
    ("03_detection", {"world.image_size": 48}, ("model.image_size=32", "world.image_size=48")),
    ("04_captioning", {"model.image_size": 64}, ("model.image_size=64", "world.image_size=32")),
    ("03_detection", {"world.max_objects": 12}, ("detection.num_slots=10",
                                                 "world.max_objects=12")),
])
def test_contradictory_overrides_are_refused_naming_both_fields(tmp_path, name, overrides,
                                                                fields):
    with pytest.raises(notebook.ParameterError) as err:
        notebook.setup(name, preset="smoke", workdir=str(tmp_path / "w"),
                       figures_dir=str(tmp_path / "f"), overrides=overrides)
    msg = str(err.value)
    assert msg.startswith("overrides:") and all(f in msg for f in fields), msg
    ctx = notebook.setup(name, preset="smoke", workdir=str(tmp_path / "w"),
                         figures_dir=str(tmp_path / "f"),
                         overrides={"world.image_size": 48, "model.image_size": 48})
    assert ctx.config.model.image_size == ctx.config.world.image_size == 48


def test_default_dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook, "repo_root", lambda: tmp_path)
    ctx = notebook.setup("x", preset="smoke")
    assert ctx.workdir == (tmp_path / "runs" / "smoke").resolve()
    assert ctx.figures == ctx.workdir / "figures"
    ctx = notebook.setup("x", preset="cpu")
    assert ctx.figures == (tmp_path / "figures").resolve()  # the committed results


def test_outputs_and_fragment(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = _setup(tmp_path, seed=4, overrides={"run.eval_examples": 8})
    assert ctx.config.run.seed == 4 and ctx.config.run.eval_examples == 8
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ctx.save_figure(fig, "curve")
    ctx.save_table("tab", [{"a": 1, "b": 0.5}, {"a": 2, "b": 0.25}])
    ctx.record("toy", "reward", mle=0.1, tuned=0.5, paper_mle=None)
    ctx.record("toy", "reward", mle=0.2, tuned=0.6)  # re-recording replaces
    ctx.record("world", "ceiling", value=3)
    out = ctx.finish()
    frag = json.loads(out.read_text())
    assert frag["seed"] == 4 and frag["preset"] == "smoke"
    assert frag["figures"] == ["curve.png", "tab.csv", "tab.md"]
    assert [(e["task"], e["metric"]) for e in frag["entries"]] == [("toy", "reward"),
                                                                   ("world", "ceiling")]
    assert frag["entries"][0]["tuned"] == 0.6
    assert (ctx.figures / "curve.png").stat().st_size > 1000
    assert (ctx.figures / "tab.md").read_text().splitlines()[2] == "| 1 | 0.5 |"


def test_record_rejects_empty_and_non_numbers(tmp_path):
    ctx = _setup(tmp_path)
    with pytest.raises(ValueError, match="needs value"):
        ctx.record("t", "m")
    with pytest.raises(ValueError, match="t/m: mle must be a number"):
        ctx.record("t", "m", mle="high")
    with pytest.raises(ValueError, match="t/m: tuned is nan; .*undefined_ok"):
        ctx.record("t", "m", mle=0.5, tuned=math.nan)
    with pytest.raises(ValueError, match="t/m: value is inf"):
        ctx.record("t", "m", value=math.inf, undefined_ok=True)
    entry = ctx.record("t", "m", mle=math.nan, tuned=0.5, undefined_ok=True)
    assert entry["mle"] is None and entry["tuned"] == 0.5
    with pytest.raises(ValueError, match="plain file name"):
        ctx.path("../escape.png")


def test_assert_finite():
    notebook.assert_finite([{"task": "t", "metric": "m", "value": 1.0}])
    with pytest.raises(ValueError, match="t/m: tuned is nan"):
        notebook.assert_finite([{"task": "t", "metric": "m", "tuned": math.nan}])
