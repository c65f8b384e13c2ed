"""Detection before/after tuning: rules, metrics, count buckets, the tuning monitor, controls
(smoke preset, untrained tiny models: these test plumbing and definitions, not results)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import sampling
from rlcv_lib.models import build_model
from rlcv_lib.tasks.detection import task as det
from rlcv_lib.tasks.detection import tune as dt


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke")


@pytest.fixture(scope="module")
def task(cfg):
    return det.DetectionTask.for_world(cfg.detection, cfg.world, np.ones(
        len(cfg.world.thing_classes)))


@pytest.fixture(scope="module")
def model(cfg, task):
    return build_model(cfg.model, task, seed=0)


@pytest.fixture(scope="module")
def data(cfg):
    return dt.split_set(cfg, "test", 8)


def _pred(boxes, labels, scores):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int32), "scores": np.asarray(scores, np.float32)}


# --- matching and count buckets on hand-built cases ---------------------------------------------

def test_match_counts_is_one_to_one_class_aware_and_thresholded():
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    labels = np.array([0, 1])
    # two boxes on gt 0 (a duplicate), one on gt 1 with the wrong class
    p = _pred([[0, 0, .5, .5], [0, 0, .5, .45], [.5, .5, 1, 1]], [0, 0, 0], [.9, .8, .7])
    assert dt.match_counts(p, gt, labels) == 1
    # IoU exactly 0.5 counts (COCO's >=), just below does not
    half = _pred([[0, 0, .5, .25]], [0], [1.0])  # IoU 0.5 with gt 0
    assert dt.match_counts(half, gt, labels) == 1
    below = _pred([[0, 0, .5, .249]], [0], [1.0])
    assert dt.match_counts(below, gt, labels) == 0
    assert dt.match_counts(_pred([], [], []), gt, labels) == 0
    assert dt.match_counts(p, np.zeros((0, 4)), np.zeros(0)) == 0


def test_higher_scored_prediction_takes_the_ground_truth_first():
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.1, 0.5, 0.6]])  # IoU(gt0, gt1) = 2/3
    labels = np.array([0, 0])
    a = [0.0, 0.0, 0.5, 0.5]  # = gt0; IoU 2/3 with gt1
    b = [0.0, 0.0, 0.5, 0.35]  # IoU 0.7 with gt0, 0.417 with gt1
    # a first: a takes gt0, b finds only gt1 below 0.5. b first: b takes gt0, a takes gt1.
    assert dt.match_counts(_pred([a, b], [0, 0], [0.9, 0.1]), gt, labels) == 1
    assert dt.match_counts(_pred([a, b], [0, 0], [0.1, 0.9]), gt, labels) == 2


def test_recall_by_count_exact_on_a_hand_built_case():
    box = [0.1, 0.1, 0.3, 0.3]
    other = [0.6, 0.6, 0.9, 0.9]
    examples = [
        {"boxes": np.array([box]), "labels": np.array([0])},                # 1 object, found
        {"boxes": np.array([box]), "labels": np.array([1])},                # 1 object, missed
        {"boxes": np.array([box, other, box]), "labels": np.array([0, 0, 2])},  # 3: 2 found
        {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)},            # 0 objects
    ]
    preds = [_pred([box], [0], [1]), _pred([box], [0], [1]),
             _pred([box, other, other], [0, 0, 1], [1, 1, 1]), _pred([box], [0], [1])]
    rows = dt.recall_by_count(preds, examples, [(1, 1), (2, 3), (4, 6)])
    assert [(r["bucket"], r["images"], r["gt"], r["found"]) for r in rows] == [
        ("1", 2, 2, 1), ("2-3", 1, 3, 2), ("4-6", 0, 0, 0)]
    assert rows[0]["recall"] == 0.5 and rows[1]["recall"] == pytest.approx(2 / 3)
    assert np.isnan(rows[2]["recall"])
    with pytest.raises(ValueError, match="3 predictions for 4 examples"):
        dt.recall_by_count(preds[:3], examples, [(1, 1)])


def test_split_set_is_capped_at_the_split_size(cfg):
    examples, batch = dt.split_set(cfg, "test", 10_000)
    assert len(examples) == cfg.world.test_size == len(batch["image"])
    assert len({e["image_id"] for e in examples}) == cfg.world.test_size


def test_validation_set_is_the_first_val_size_scenes_within_eval_examples(cfg):
    examples, _ = dt.validation_set(cfg)
    assert len(examples) == min(dt.VAL_SIZE, cfg.run.eval_examples, cfg.world.validation_size)
    few, batch = dt.validation_set(cfg, size=3)
    assert [e["image_id"] for e in few] == [e["image_id"] for e in examples[:3]]
    assert len(batch["image"]) == 3


def test_count_buckets_cover_one_to_max_without_gaps():
    for m in (1, 4, 6, 12, 30):
        b = dt.count_buckets(m)
        assert b[0][0] == 1 and b[-1][1] == m and len(b) <= 4
        assert all(hi >= lo for lo, hi in b)
        assert all(b[i][1] + 1 == b[i + 1][0] for i in range(len(b) - 1))
    assert dt.count_buckets(12) == [(1, 3), (4, 6), (7, 9), (10, 12)]
    with pytest.raises(ValueError, match="max_objects"):
        dt.count_buckets(0)


def test_pearson():
    assert dt.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert dt.pearson([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(dt.pearson([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError):
        dt.pearson([1, 2, 3], [1, 2])


# --- rules on a real (untrained) model ----------------------------------------------------------

def test_no_early_stop_grammar_forbids_pad_only_at_slot_starts(task):
    rule = dt.NoEarlyStop(task)
    pos = np.arange(task.max_len)
    prev = np.full(task.max_len, det.COORD_OFFSET)
    base, new = np.asarray(task.allowed(pos, prev)), np.asarray(rule(pos, prev))
    starts = pos % det.TOKENS_PER_BOX == 0
    assert base[starts, det.PAD].all() and not new[starts, det.PAD].any()
    np.testing.assert_array_equal(np.delete(new, det.PAD, -1), np.delete(base, det.PAD, -1))
    np.testing.assert_array_equal(new[~starts], base[~starts])
    assert dt.NoEarlyStop(task) == rule and hash(dt.NoEarlyStop(task)) == hash(rule)


def test_pix2seq_rule_emits_every_slot_where_the_default_rule_stops(model, task, data):
    _, batch = data
    # a model pushed to stop at once: PAD's logit raised far above the rest
    stopper = nnx.clone(model)
    bias = stopper.decoder.head.bias
    bias.value = bias.value.at[det.PAD].add(30.0)
    _, greedy_tokens = dt.predict(stopper, task, batch["image"], dt.MLE_RULE)
    assert (greedy_tokens == det.PAD).all()
    preds, tokens = dt.predict(stopper, task, batch["image"], dt.PIX2SEQ_RULE,
                               key=jax.random.key(1))
    slots = tokens.reshape(len(tokens), -1, det.TOKENS_PER_BOX)
    assert (slots[..., 0:4] >= det.COORD_OFFSET).all()
    assert (slots[..., 0:4] < task.class_offset).all()
    assert (slots[..., 4] >= task.class_offset).all()
    assert np.isin(slots[..., 5], [det.CONF_LOW, det.CONF_HIGH]).all()
    # decoding keeps every slot except inverted/empty boxes
    for t, p in zip(tokens, preds, strict=True):
        q = t.reshape(-1, 6)[:, :4]
        nonempty = np.flatnonzero((q[:, 2] > q[:, 0]) & (q[:, 3] > q[:, 1]))
        np.testing.assert_array_equal(p["slots"], nonempty)


def test_sampling_rule_is_a_pure_function_of_the_key(model, task, data):
    _, batch = data
    rule = dataclasses.replace(dt.PIX2SEQ_RULE, no_early_stop=False)
    a = dt.predict(model, task, batch["image"], rule, key=jax.random.key(3))[1]
    b = dt.predict(model, task, batch["image"], rule, key=jax.random.key(3))[1]
    c = dt.predict(model, task, batch["image"], rule, key=jax.random.key(4))[1]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_score_rules_differ_as_documented(model, task, data):
    _, batch = data
    rule = dataclasses.replace(dt.PIX2SEQ_RULE, top_p=1.0)
    preds_c, tokens = dt.predict(model, task, batch["image"], rule, key=jax.random.key(0))
    preds_k, tokens_k = dt.predict(model, task, batch["image"],
                                   dataclasses.replace(rule, score="confidence"),
                                   key=jax.random.key(0))
    np.testing.assert_array_equal(tokens, tokens_k)  # same boxes, different scores
    spec = sampling.DecodeSpec.for_task(task)
    lsm = np.asarray(sampling.teacher_forced_jit(model, batch["image"], tokens[:, None], spec)
                     .log_softmax[:, 0])
    for i, (pc, pk) in enumerate(zip(preds_c, preds_k, strict=True)):
        np.testing.assert_array_equal(pc["boxes"], pk["boxes"])
        slots = pc["slots"]
        cls = tokens[i, slots * 6 + 4]
        np.testing.assert_allclose(pc["scores"], np.exp(lsm[i, slots * 6 + 4, cls]), rtol=1e-5)
        p = np.exp(lsm[i, slots * 6 + 5, 1:3])
        np.testing.assert_allclose(pk["scores"], p[:, 1] / p.sum(-1), rtol=1e-5)
    assert not np.allclose(np.concatenate([p["scores"] for p in preds_c]),
                           np.concatenate([p["scores"] for p in preds_k]))
    # one decode, every rule: the same boxes, the product of the two scores
    scored, tokens_s = dt.predict_scored(model, task, batch["image"], rule,
                                         key=jax.random.key(0))
    np.testing.assert_array_equal(tokens, tokens_s)
    assert list(scored) == list(det.SCORE_RULES) == ["confidence", "class", "class_x_confidence"]
    for pc, pk, px in zip(preds_c, preds_k, scored["class_x_confidence"], strict=True):
        np.testing.assert_array_equal(px["boxes"], pc["boxes"])
        np.testing.assert_allclose(px["scores"], pc["scores"] * pk["scores"], rtol=1e-5)
    for name, preds in (("class", preds_c), ("confidence", preds_k)):
        np.testing.assert_array_equal(np.concatenate([p["scores"] for p in scored[name]]),
                                      np.concatenate([p["scores"] for p in preds]))


def test_metrics_keys_and_ranges(model, task, data):
    examples, batch = data
    m, preds = dt.evaluate(model, task, examples, batch, dt.PIX2SEQ_RULE, jax.random.key(0))
    assert set(m) == set(dt.METRICS) and len(preds) == len(examples)
    for k in ("mAP", "AP50", "AP75", "AR@100", "recall50", "recall50_gt"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["boxes_per_image"] == pytest.approx(np.mean([len(p["labels"]) for p in preds]))
    assert m["gt_per_image"] == pytest.approx(np.mean([len(e["labels"]) for e in examples]))
    # the ground truth as predictions scores perfectly
    truth = [_pred(e["boxes"], e["labels"], np.ones(len(e["labels"]))) for e in examples]
    perfect = dt.metrics_of(task, truth, examples)
    assert perfect["mAP"] == pytest.approx(1.0) and perfect["recall50_gt"] == 1.0
    row = dt.result_row("truth", perfect, seconds=1.0)
    assert row["mAP"] == pytest.approx(100.0) and row["seconds"] == 1.0


def test_oracle_classes_take_the_most_overlapped_true_class():
    ex = {"boxes": np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32),
          "labels": np.array([0, 2])}
    pred = _pred([[0.0, 0.0, 0.4, 0.5], [0.45, 0.45, 1.0, 1.0], [0.0, 0.6, 0.3, 0.9]],
                 [1, 1, 1], [0.9, 0.8, 0.7])
    (out,) = dt.with_oracle_classes([pred], [ex])
    np.testing.assert_array_equal(out["labels"], [0, 2, 1])  # the third overlaps nothing
    np.testing.assert_array_equal(out["boxes"], pred["boxes"])
    np.testing.assert_array_equal(out["scores"], pred["scores"])
    assert dt.match_counts(out, ex["boxes"], ex["labels"]) == 2
    assert dt.match_counts(pred, ex["boxes"], ex["labels"]) == 0
    empty = _pred(np.zeros((0, 4)), [], [])
    assert len(dt.with_oracle_classes([empty], [ex])[0]["labels"]) == 0


# --- the tuning monitor and the MLE-as-long control ---------------------------------------------

def test_monitor_outputs_and_keeps_the_best_state(cfg, task):
    examples, batch = dt.split_set(cfg, "validation", 8)
    model = build_model(cfg.model, task, seed=1)
    mon = dt.TuningMonitor(task, examples, batch, num_samples=2, seed=0)
    out = mon(model, 0)
    assert set(out) == {"val_reward", "mAP", "AP50", "recall50", "recall50_gt",
                        "boxes_per_image", "mAP_class_score", "mAP_confidence_score"}
    assert mon.select_rule == dt.TUNED_RULE and dt.TUNED_RULE.score == "class_x_confidence"
    assert np.isfinite(out["val_reward"]) and out["val_reward"] >= 0
    assert mon(model, 1) == out  # fixed key, same model: same numbers
    assert mon.best_step == 0 and len(mon.history) == 2 and mon.seconds > 0
    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    # a later model that does not beat the best validation mAP does not replace its state
    mon.best_map = 2.0  # above any mAP: step 0 stays the best
    nnx.update(model, jax.tree.map(lambda x: x + 1.0, nnx.state(model, nnx.Param)))
    mon(model, 5)
    assert mon.best_step == 0
    assert mon.restore_best(model) == 0
    after = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_validation_reward_is_the_task_reward_of_the_samples(model, task, data):
    _, batch = data
    key = jax.random.key(7)
    r = dt.validation_reward(model, task, batch, 3, key, chunk=len(batch["image"]))
    spec = sampling.DecodeSpec.for_task(task, num_samples=3)
    tokens = np.asarray(sampling.sample_jit(model, batch["image"], jax.random.fold_in(key, 0),
                                            spec).tokens)
    want, _ = task.reward(tokens, batch)
    assert r == pytest.approx(float(want.mean()))


def test_continue_mle_trains_a_copy(cfg, model, task):
    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    trained, info = dt.continue_mle(cfg, model, task, seconds=60.0, train_size=16, max_steps=2)
    assert info["steps"] == 2 and info["seconds"] >= 0
    jax.tree.map(np.testing.assert_array_equal, before,
                 jax.tree.map(np.array, nnx.state(model, nnx.Param)))  # original untouched
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(),
                                         nnx.state(trained, nnx.Param), before))
    assert max(moved) > 0
    _, none = dt.continue_mle(cfg, model, task, seconds=0.0, train_size=16)
    assert none["steps"] == 0
    with pytest.raises(ValueError, match="seconds"):
        dt.continue_mle(cfg, model, task, seconds=-1.0)


def test_update_seconds_uses_the_median_rate():
    from rlcv_lib.core.history import History

    h = History()
    h.append({"kind": "eval", "step": 0, "mAP": 0.0})
    for step, rate in ((10, 0.1), (20, 2.0), (30, 2.5), (40, 1.0)):  # first: compile
        h.append({"kind": "train", "step": step, "steps_per_s": rate, "loss": 1.0})
    assert dt.update_seconds(h) == pytest.approx(40 / 1.5)
    with pytest.raises(ValueError, match="no train record"):
        dt.update_seconds(History())


def test_tables_and_panels(task, data):
    examples, _ = data
    control = {"true": {"coord": 1.0, "class": 0.5}, "wrong": {"coord": 2.0, "class": 0.75},
               "gap": {"coord": 1.0, "class": 0.25}}
    rows = dt.wrong_image_rows(control)
    assert [r["token kind"] for r in rows] == ["coord", "class"]
    assert rows[1]["gap"] == 0.25 and rows[1]["NLL wrong image"] == 0.75
    truth = [_pred(e["boxes"], e["labels"], np.ones(len(e["labels"]))) for e in examples]
    fig = dt.before_after_figure(task, examples, [("a", truth), ("b", truth)], [0, 2, 3])
    assert np.asarray(fig.axes).size == 6
    assert fig.axes[0].get_ylabel() == "a" and fig.axes[3].get_ylabel() == "b"


def test_reset_confidence_changes_only_the_confidence_positions(model, task, data):
    _, batch = data
    x = batch["image"][:4]
    _, tokens = dt.predict(model, task, x, dt.PIX2SEQ_RULE, key=jax.random.key(2))
    spec = sampling.DecodeSpec.for_task(task)
    before = np.asarray(sampling.teacher_forced_jit(model, x, tokens[:, None], spec)
                        .log_softmax[:, 0])
    reset = nnx.clone(model)
    dt.reset_confidence(reset)
    after = np.asarray(sampling.teacher_forced_jit(reset, x, tokens[:, None], spec)
                       .log_softmax[:, 0])
    conf = np.arange(task.max_len) % det.TOKENS_PER_BOX == det.CONF_KIND
    np.testing.assert_allclose(after[:, ~conf], before[:, ~conf], atol=1e-6)
    np.testing.assert_allclose(np.exp(after[:, conf][..., 1:3]), 0.5, atol=1e-6)
    assert not np.allclose(np.exp(before[:, conf][..., 1:3]), 0.5, atol=1e-3)
    scores = dt.predict(reset, task, x, dataclasses.replace(dt.PIX2SEQ_RULE,
                                                            score="confidence"))[0]
    np.testing.assert_allclose(np.concatenate([p["scores"] for p in scores]), 0.5, atol=1e-6)
    dt.reset_confidence(reset, margin=1.0)
    lsm = np.asarray(sampling.teacher_forced_jit(reset, x, tokens[:, None], spec)
                     .log_softmax[:, 0])
    np.testing.assert_allclose(np.exp(lsm[:, conf][..., 2]), 1 / (1 + np.exp(-1.0)), atol=1e-6)
    np.testing.assert_allclose(lsm[:, ~conf], before[:, ~conf], atol=1e-6)


def test_rule_validation():
    with pytest.raises(ValueError, match="decode"):
        dt.Rule("x", decode="beam")
    with pytest.raises(ValueError, match="top_p"):
        dt.Rule("x", top_p=0.0)
    with pytest.raises(ValueError, match="score"):
        dt.Rule("x", score="iou")
    with pytest.raises(ValueError, match="unknown score rules"):
        dt.predict_scored(None, None, np.zeros((1, 8, 8, 3)), dt.TUNED_RULE, ("iou",))


def test_the_cli_tunes_evaluates_and_writes_each_seed(tmp_path, capsys, monkeypatch):
    sizes = []
    split_set = dt.split_set

    def recording_split_set(cfg, split, n, cache_dir):
        sizes.append((split, n))
        return split_set(cfg, split, n, cache_dir)

    monkeypatch.setattr(dt, "split_set", recording_split_set)
    dt.main(["smoke", str(tmp_path), "3", "tune.num_steps=2", "tune.eval_every=1",
             "val_size=8"])
    out = json.loads((tmp_path / "seed3.json").read_text())
    assert out["val_size"] == 8 and ("validation", 8) in sizes  # smoke's default would be 16
    assert set(out["test"]) == {"MLE", "tuned", "tuned, confidence score", "tuned, class score"}
    assert [r["step"] for r in out["curve"]] == [0, 1, 2]
    assert out["best_step"] in (0, 1, 2) and out["seed"] == 3
    assert out["overrides"] == {"tune.num_steps": "2", "tune.eval_every": "1"}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    assert [r["eval"]["step"] for r in lines if "eval" in r] == [0, 1, 2]
    assert [r["row"] for r in lines if "row" in r] == list(out["test"])


def test_confidence_lr_scales_only_the_confidence_readout(model):
    assert dt.confidence_lr(1.0) is None
    tx = dt.confidence_lr(10.0)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    out, _ = tx.update(grads, tx.init(grads))
    kernel = np.asarray(out["decoder"]["head"]["kernel"][...])
    scaled = np.zeros(kernel.shape[-1], bool)
    scaled[[det.CONF_LOW, det.CONF_HIGH]] = True
    assert (kernel[:, scaled] == 10).all() and (kernel[:, ~scaled] == 1).all()
    rest = [np.asarray(v[...]) for p, v in nnx.to_flat_state(out) if "head" not in p]
    assert all((r == 1).all() for r in rest)
