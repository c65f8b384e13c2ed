"""Detection's rules and metrics: matching, count buckets, decode and score rules, COCO metrics
(smoke preset, untrained tiny models: these test plumbing and definitions, not results)."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import sampling
from rlcv_lib.models import build_model
from rlcv_lib.tasks.detection import metrics as dm
from rlcv_lib.tasks.detection import task as det


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", task="detection")


@pytest.fixture(scope="module")
def task(cfg):
    return det.DetectionTask.for_world(cfg.detection, cfg.world, np.ones(
        len(cfg.world.thing_classes)))


@pytest.fixture(scope="module")
def model(cfg, task):
    return build_model(cfg.model, task, seed=0)


@pytest.fixture(scope="module")
def data(cfg):
    return ev.load_split(cfg, "test", 8)


def _pred(boxes, labels, scores):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int32), "scores": np.asarray(scores, np.float32)}


def test_match_counts_is_one_to_one_class_aware_and_thresholded():
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    labels = np.array([0, 1])
    # two boxes on gt 0 (a duplicate), one on gt 1 with the wrong class
    p = _pred([[0, 0, .5, .5], [0, 0, .5, .45], [.5, .5, 1, 1]], [0, 0, 0], [.9, .8, .7])
    assert dm.match_counts(p, gt, labels) == 1
    # IoU exactly 0.5 counts (COCO's >=), just below does not
    half = _pred([[0, 0, .5, .25]], [0], [1.0])  # IoU 0.5 with gt 0
    assert dm.match_counts(half, gt, labels) == 1
    below = _pred([[0, 0, .5, .249]], [0], [1.0])
    assert dm.match_counts(below, gt, labels) == 0
    assert dm.match_counts(_pred([], [], []), gt, labels) == 0
    assert dm.match_counts(p, np.zeros((0, 4)), np.zeros(0)) == 0


def test_higher_scored_prediction_takes_the_ground_truth_first():
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.1, 0.5, 0.6]])  # IoU(gt0, gt1) = 2/3
    labels = np.array([0, 0])
    a = [0.0, 0.0, 0.5, 0.5]  # = gt0; IoU 2/3 with gt1
    b = [0.0, 0.0, 0.5, 0.35]  # IoU 0.7 with gt0, 0.417 with gt1
    # a first: a takes gt0, b finds only gt1 below 0.5. b first: b takes gt0, a takes gt1.
    assert dm.match_counts(_pred([a, b], [0, 0], [0.9, 0.1]), gt, labels) == 1
    assert dm.match_counts(_pred([a, b], [0, 0], [0.1, 0.9]), gt, labels) == 2


def test_greedy_match_counts_second_boxes_on_found_objects_as_duplicates():
    gt = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    labels = np.array([0, 1])
    on0, near0, on1 = [0, 0, .5, .5], [0, 0, .5, .45], [.5, .5, 1, 1]
    # the second box on gt 0 is a duplicate; a wrong-class box on gt 1 is not (it re-finds
    # nothing of its class), nor is a box on nothing
    p = _pred([on0, near0, on1, [.9, 0, 1, .1]], [0, 0, 0, 0], [.9, .8, .7, .6])
    assert dm.greedy_match(p, gt, labels) == (1, 1)
    # the order is the score's: the lower-scored of the two is the duplicate, whichever it is
    assert dm.greedy_match(_pred([on0, near0], [0, 0], [.1, .9]), gt, labels) == (1, 1)
    # below the IoU threshold to the found object: not a duplicate
    assert dm.greedy_match(_pred([on0, [0, 0, .5, .2]], [0, 0], [.9, .8]), gt, labels) == (1, 0)
    # a box that takes an object of its own is never a duplicate
    assert dm.greedy_match(_pred([on0, on1], [0, 1], [.9, .8]), gt, labels) == (2, 0)
    assert dm.greedy_match(_pred([], [], []), gt, labels) == (0, 0)


def test_metrics_count_duplicates_per_image(task):
    ex = {"boxes": np.array([[0.0, 0.0, 0.5, 0.5]]), "labels": np.array([0]),
          "image": np.zeros((64, 64, 3), np.uint8)}
    twice = _pred([[0, 0, .5, .5]] * 3, [0, 0, 0], [.9, .8, .7])
    once = _pred([[0, 0, .5, .5]], [0], [.9])
    m = dm.metrics_of(task, [twice, once], [ex | {"image_id": 1}, ex | {"image_id": 2}])
    assert m["duplicates_per_image"] == 1.0 and m["recall50_gt"] == 1.0


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
    rows = dm.recall_by_count(preds, examples, [(1, 1), (2, 3), (4, 6)])
    assert [(r["bucket"], r["images"], r["gt"], r["found"]) for r in rows] == [
        ("1", 2, 2, 1), ("2-3", 1, 3, 2), ("4-6", 0, 0, 0)]
    assert rows[0]["recall"] == 0.5 and rows[1]["recall"] == pytest.approx(2 / 3)
    assert np.isnan(rows[2]["recall"])
    with pytest.raises(ValueError, match="3 predictions for 4 examples"):
        dm.recall_by_count(preds[:3], examples, [(1, 1)])


def test_count_buckets_cover_one_to_max_without_gaps():
    for m in (1, 4, 6, 12, 30):
        b = dm.count_buckets(m)
        assert b[0][0] == 1 and b[-1][1] == m and len(b) <= 4
        assert all(hi >= lo for lo, hi in b)
        assert all(b[i][1] + 1 == b[i + 1][0] for i in range(len(b) - 1))
    assert dm.count_buckets(12) == [(1, 3), (4, 6), (7, 9), (10, 12)]
    with pytest.raises(ValueError, match="max_objects"):
        dm.count_buckets(0)


def test_no_early_stop_grammar_forbids_pad_only_at_slot_starts(task):
    rule = dm.NoEarlyStop(task)
    pos = np.arange(task.max_len)
    prev = np.full(task.max_len, det.COORD_OFFSET)
    base, new = np.asarray(task.allowed(pos, prev)), np.asarray(rule(pos, prev))
    starts = pos % det.TOKENS_PER_BOX == 0
    assert base[starts, det.PAD].all() and not new[starts, det.PAD].any()
    np.testing.assert_array_equal(np.delete(new, det.PAD, -1), np.delete(base, det.PAD, -1))
    np.testing.assert_array_equal(new[~starts], base[~starts])
    assert dm.NoEarlyStop(task) == rule and hash(dm.NoEarlyStop(task)) == hash(rule)


def test_pix2seq_rule_emits_every_slot_where_the_default_rule_stops(model, task, data):
    batch = data.batch
    # a model pushed to stop at once: PAD's logit raised far above the rest
    stopper = nnx.clone(model)
    bias = stopper.decoder.head.bias
    bias.value = bias.value.at[det.PAD].add(30.0)
    _, greedy_tokens = dm.predict(stopper, task, batch["image"], dm.MLE_RULE)
    assert (greedy_tokens == det.PAD).all()
    preds, tokens = dm.predict(stopper, task, batch["image"], dm.PIX2SEQ_RULE,
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
    batch = data.batch
    rule = dataclasses.replace(dm.PIX2SEQ_RULE, no_early_stop=False)
    a = dm.predict(model, task, batch["image"], rule, key=jax.random.key(3))[1]
    b = dm.predict(model, task, batch["image"], rule, key=jax.random.key(3))[1]
    c = dm.predict(model, task, batch["image"], rule, key=jax.random.key(4))[1]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_score_rules_differ_as_documented(model, task, data):
    batch = data.batch
    rule = dataclasses.replace(dm.PIX2SEQ_RULE, top_p=1.0)
    preds_c, tokens = dm.predict(model, task, batch["image"], rule, key=jax.random.key(0))
    preds_k, tokens_k = dm.predict(model, task, batch["image"],
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
    scored, tokens_s = dm.predict_scored(model, task, batch["image"], rule,
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
    examples = data.examples
    m, preds = dm.evaluate(model, task, data, dm.PIX2SEQ_RULE, jax.random.key(0))
    assert set(m) == set(dm.METRICS) and len(preds) == len(examples)
    for k in ("mAP", "AP50", "AP75", "AR@100", "recall50", "recall50_gt"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["boxes_per_image"] == pytest.approx(np.mean([len(p["labels"]) for p in preds]))
    assert m["gt_per_image"] == pytest.approx(np.mean([len(e["labels"]) for e in examples]))
    # the ground truth as predictions scores perfectly
    truth = [_pred(e["boxes"], e["labels"], np.ones(len(e["labels"]))) for e in examples]
    perfect = dm.metrics_of(task, truth, examples)
    assert perfect["mAP"] == pytest.approx(1.0) and perfect["recall50_gt"] == 1.0
    row = dm.result_row("truth", perfect, seconds=1.0)
    assert row["mAP"] == pytest.approx(100.0) and row["seconds"] == 1.0


def test_oracle_classes_take_the_most_overlapped_true_class():
    ex = {"boxes": np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32),
          "labels": np.array([0, 2])}
    pred = _pred([[0.0, 0.0, 0.4, 0.5], [0.45, 0.45, 1.0, 1.0], [0.0, 0.6, 0.3, 0.9]],
                 [1, 1, 1], [0.9, 0.8, 0.7])
    (out,) = dm.with_oracle_classes([pred], [ex])
    np.testing.assert_array_equal(out["labels"], [0, 2, 1])  # the third overlaps nothing
    np.testing.assert_array_equal(out["boxes"], pred["boxes"])
    np.testing.assert_array_equal(out["scores"], pred["scores"])
    assert dm.match_counts(out, ex["boxes"], ex["labels"]) == 2
    assert dm.match_counts(pred, ex["boxes"], ex["labels"]) == 0
    empty = _pred(np.zeros((0, 4)), [], [])
    assert len(dm.with_oracle_classes([empty], [ex])[0]["labels"]) == 0


def test_rule_validation():
    with pytest.raises(ValueError, match="decode"):
        dm.Rule("x", decode="beam")
    with pytest.raises(ValueError, match="top_p"):
        dm.Rule("x", top_p=0.0)
    with pytest.raises(ValueError, match="score"):
        dm.Rule("x", score="iou")
    with pytest.raises(ValueError, match="unknown score rules"):
        dm.predict_scored(None, None, np.zeros((1, 8, 8, 3)), dm.TUNED_RULE, ("iou",))
