"""Captioning's evaluation (smoke preset, tiny shapes): the judge over decoding rules, the
reward distribution, and the references' ceiling against pycocoevalcap."""

import jax
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import pretrain as mle
from rlcv_lib.tasks.captioning import figures as cfig
from rlcv_lib.tasks.captioning import metrics as cm
from rlcv_lib.tasks.captioning import pretrain as cx


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", overrides={
        "train.num_steps": 6, "train.eval_every": 6, "train.log_every": 3,
        "train.ckpt_every": 6, "tune.num_steps": 4, "tune.eval_every": 2, "tune.log_every": 2,
        "tune.ckpt_every": 2, "tune.lr": 3e-3}, task="captioning")


@pytest.fixture(scope="module")
def pre(cfg, tmp_path_factory):
    return mle.pretrain(cx.RECIPE, cfg, tmp_path_factory.mktemp("mle") / "mle",
                        eval_examples=4, progress=False)


@pytest.fixture(scope="module")
def val(cfg):
    return ev.load_split(cfg, "validation", 6)


def _params(model):
    return jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(model, nnx.Param)))


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


def test_distribution_rows_hold_every_model_and_decoding():
    s = ev.summarize(np.arange(5.0))
    rows = cm.distribution_rows({"MLE": {"greedy": s, "sampled": s},
                                 "LOO": {"greedy": s, "sampled": s}})
    assert [(r["model"], r["decoding"]) for r in rows] == [
        ("MLE", "greedy"), ("LOO", "greedy"), ("MLE", "sampled"), ("LOO", "sampled")]
    assert list(rows[0]) == ["model", "decoding", "n", "mean", "std", "p10", "p25", "p50",
                             "p75", "p90"]


def test_relative_gain_picks_the_rows_of_one_decoding():
    rows = [{"model": "MLE", "decoding": "greedy", "CIDEr-D": 0.5},
            {"model": "LOO", "decoding": "greedy", "CIDEr-D": 0.6},
            {"model": "LOO", "decoding": "beam", "CIDEr-D": 0.9}]
    assert cm.relative_gain(rows, "CIDEr-D", "MLE", "LOO", "greedy") == pytest.approx(0.2)
    with pytest.raises(KeyError, match="beam"):
        cm.relative_gain(rows, "CIDEr-D", "MLE", "LOO", "beam")


def _hand_split():
    refs = [["a red circle", "one red circle on grass", "a circle", "red circle left",
             "a red ring"],
            ["two blue squares", "blue squares on water", "two squares", "a blue square",
             "two blue frames"],
            ["a green star above a star", "green star", "two stars", "a star", "stars on sand"]]
    return ev.Split("test", [{"captions": r} for r in refs], {"captions": np.array(refs)})


def test_ceiling_equals_pycocoevalcap_each_reference_against_the_other_four():
    from pycocoevalcap.cider.cider import Cider

    split = _hand_split()
    refs = [ex["captions"] for ex in split.examples]
    mean, per = cm.reference_ceiling(split)
    want = np.zeros((3, 5))
    for k in range(5):
        gts = {i: r[:k] + r[k + 1:] for i, r in enumerate(refs)}
        want[:, k] = Cider().compute_score(gts, {i: [r[k]] for i, r in enumerate(refs)})[1]
    np.testing.assert_allclose(per, want, atol=1e-12)
    assert mean == pytest.approx(want.mean())

    preds = ["a red circle on grass", "blue squares", "a star"]
    loo = cm.leave_one_out_cider(preds, split)
    want_loo = np.mean([Cider().compute_score({i: r[:k] + r[k + 1:] for i, r in enumerate(refs)},
                                              {i: [p] for i, p in enumerate(preds)})[0]
                        for k in range(5)])
    assert loo == pytest.approx(want_loo, abs=1e-12)
    assert loo > cm.leave_one_out_cider(["wall wall", "wall wall", "wall wall"], split)
    with pytest.raises(ValueError, match="2 predictions for 3"):
        cm.leave_one_out_cider(preds[:2], split)


def test_reward_distribution_counts_and_key(pre, val):
    d = cm.reward_distribution(pre.model, pre.task, val, 3, jax.random.key(1))
    assert d["greedy"]["n"] == len(val) and d["sampled"]["n"] == 3 * len(val)
    greedy = ev.decode(pre.model, pre.task, val.batch["image"])[:, None]
    r = pre.task.reward(greedy, val.batch)[0]
    assert d["greedy"]["mean"] == pytest.approx(float(r.mean()))
    assert d["greedy"]["p50"] == pytest.approx(float(np.median(r)))
    other = cm.reward_distribution(pre.model, pre.task, val, 3, jax.random.key(2))
    assert other["greedy"] == d["greedy"] and other["sampled"] != d["sampled"]


def test_evaluate_models_decodes_every_model_the_same_way(pre, val):
    twin = nnx.clone(pre.model)
    rows, decoded = cm.evaluate_models({"a": pre.model, "b": twin}, pre.task, val,
                                       beam_size=1)
    assert [(r["model"], r["decoding"]) for r in rows] == [
        ("a", "greedy"), ("b", "greedy"), ("a", "beam"), ("b", "beam")]
    for r in rows:
        assert {"CIDEr-D", "BLEU-4", "ROUGE-L", "reward", "words", "empty"} <= set(r)
    strip = [{k: v for k, v in r.items() if k != "model"} for r in rows]
    assert strip[0] == strip[1] and strip[2] == strip[3]
    # a beam of width 1 is greedy decoding
    assert decoded["a", "beam"].captions == decoded["a", "greedy"].captions
    assert rows[0]["CIDEr-D"] == pytest.approx(rows[2]["CIDEr-D"])
    d = decoded["a", "greedy"]
    assert rows[0]["CIDEr-D"] == pre.task.evaluate(d.captions, val.examples)["CIDEr-D"]
    assert d.reward.shape == (len(val),) and rows[0]["reward"] == pytest.approx(d.reward.mean())
    shown = cfig.example_rows(val, {"a": d}, [2, 0])
    assert [r["image"] for r in shown] == [2, 0]
    assert shown[0]["a"] == d.captions[2] and shown[0]["a CIDEr-D"] == pytest.approx(d.reward[2])
    assert shown[1]["reference"] == val.examples[0]["captions"][0]


def test_without_java_leaves_the_task_alone(pre):
    import copy
    import dataclasses

    task = copy.copy(pre.task)
    task.cfg = dataclasses.replace(task.cfg, java_metrics=True)
    nj = cm.without_java(task)
    assert nj.cfg.java_metrics is False and task.cfg.java_metrics is True
    assert nj.vocab is task.vocab and nj.scorer is task.scorer


def test_caption_statistics_counts_templates_words_and_shape_classes():
    stats = cm.caption_statistics(["one white triangle and one white triangle",
                                   "a hollow square and two discs", "A red block.",
                                   "one white triangle and one white triangle", ""])
    assert stats["captions"] == 5 and stats["distinct captions"] == 4
    assert stats["distinct words"] == 11  # normalised: "A red block." -> a red block
    assert stats["shape nouns"] == 7  # "hollow square" is one frame, not a square
    assert stats["shape: triangle"] == pytest.approx(4 / 7)
    for shape in ("frame", "circle", "square"):
        assert stats[f"shape: {shape}"] == pytest.approx(1 / 7)
    assert "shape: star" not in stats
    assert cm.caption_statistics(["trianglesquare triangles"])["shape: triangle"] == 1.0
    empty = cm.caption_statistics([])
    assert empty["captions"] == empty["shape nouns"] == 0
