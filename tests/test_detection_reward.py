"""The detection reward: hand-built values, the released replay, pycocotools as the judge."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rlcv_lib.data import coco_export
from rlcv_lib.tasks.detection import reward as D
from rlcv_lib.tasks.detection import reward_released as R
from rlcv_lib.tasks.detection.task import DetectionConfig, DetectionTask

THR = np.asarray(D.THRESHOLDS)
RELEASED_WEIGHTS = np.array([1, 0, 2, 0, 2, 0, 0, 3, 0, 2]) / 10  # on 0.5, 0.55, ..., 0.95


def reward(pred, pred_lab, gt, gt_lab, weights=(1.0, 1.0), **kw):
    """One image, one sample: boxes as lists; returns the DetectionReward."""
    pred = np.asarray(pred, float).reshape(1, 1, -1, 4)
    gt = np.asarray(gt, float).reshape(1, -1, 4)
    return D.detection_reward(pred, np.reshape(pred_lab, (1, 1, -1)),
                              np.ones(pred.shape[:3], bool), gt, np.reshape(gt_lab, (1, -1)),
                              np.asarray(weights), **kw)


BOX = [0.1, 0.1, 0.5, 0.5]


# --- hand-built cases --------------------------------------------------------------------------


def test_perfect_match_scores_the_class_weight():
    r = reward([BOX], [1], [BOX], [1], weights=(1.0, 2.5))
    assert r.reward[0, 0] == pytest.approx(2.5)
    np.testing.assert_array_equal(r.num_matches[0, 0], np.ones(10))
    np.testing.assert_allclose(r.match_iou[0, 0], [1.0])


def test_duplicate_costs_nms_w_of_its_class_weight():
    r = reward([BOX, BOX], [0, 0], [BOX], [0], weights=(2.0, 1.0))
    assert r.reward[0, 0] == pytest.approx(2.0 - 0.3 * 2.0)
    np.testing.assert_array_equal(r.num_duplicates[0, 0], np.ones(10))
    # the first of two equal predictions is taken; the released target gives the duplicate its IoU
    np.testing.assert_allclose(r.match_iou[0, 0], [1.0, 1.0])
    m = reward([BOX, BOX], [0, 0], [BOX], [0], conf_target="matched")
    np.testing.assert_allclose(m.match_iou[0, 0], [1.0, 0.0])


def test_wrong_class_and_unmatched_false_positives_are_free():
    assert reward([BOX], [0], [BOX], [1]).reward[0, 0] == 0.0
    far = [0.7, 0.7, 0.9, 0.9]
    assert reward([BOX, far], [1, 1], [BOX], [1]).reward[0, 0] == pytest.approx(1.0)


def test_a_prediction_counts_for_its_best_ground_truth_only():
    """Two overlapping ground truths A, B; P overlaps both (IoU 0.905 with A, 0.860 with B), Q is
    B. P belongs to A only, so it is no duplicate of B; above 0.905, A goes unmatched."""
    a, b = [0, 0, 0.4, 0.4], [0, 0.05, 0.4, 0.45]
    p, q = [0, 0.02, 0.4, 0.42], b
    r = reward([p, q], [0, 0], [a, b], [0, 0])
    np.testing.assert_array_equal(r.num_matches[0, 0], [2] * 9 + [1])
    np.testing.assert_array_equal(r.num_duplicates[0, 0], np.zeros(10))
    assert r.reward[0, 0] == pytest.approx(1.9)
    np.testing.assert_allclose(r.match_iou[0, 0], [0.152 / 0.168, 1.0])


@pytest.mark.parametrize("compat", [False, True])
def test_iou_exactly_at_a_threshold_does_not_match(compat):
    """Strict > as released (COCOeval matches at IoU >= t): IoU exactly 0.5 or 0.75 fails it."""
    gt = [0, 0, 0.5, 0.5]
    assert reward([[0, 0, 0.25, 0.5]], [0], [gt], [0], paper_compat=compat).reward[0, 0] == 0
    r = reward([[0, 0, 0.375, 0.5]], [0], [gt], [0], paper_compat=compat)
    np.testing.assert_array_equal(r.num_matches[0, 0], [1] * 5 + [0] * 5)  # 0.5 .. 0.7


def test_ties_go_to_the_first_index_as_released():
    """P is exactly as close to A as to B (IoU 7/9 with both); Q is B. P keeps A (the first
    ground truth), Q keeps B: two matches, no duplicate. Q = P twice: the first is taken."""
    a, b = [0, 0, 0.5, 0.5], [0, 0.125, 0.5, 0.625]
    p = [0, 0.0625, 0.5, 0.5625]
    r = reward([p, b], [0, 0], [a, b], [0, 0])
    np.testing.assert_array_equal(r.num_matches[0, 0], [2] * 6 + [1] * 4)  # 7/9 = 0.778
    np.testing.assert_array_equal(r.num_duplicates[0, 0], np.zeros(10))
    r = reward([p, p], [0, 0], [a], [0], conf_target="matched")
    np.testing.assert_allclose(r.match_iou[0, 0], [7 / 9, 0.0])


@pytest.mark.parametrize("k", range(10))
def test_iou_just_below_and_above_a_threshold(k):
    """A prediction of IoU t±δ matches at exactly the thresholds below it."""
    t = THR[k]
    for delta, passes in ((-1e-4, k), (1e-4, k + 1)):
        h = 0.4 * (t + delta)  # same x extent, height scaled: IoU = h / 0.4
        pred = [0.1, 0.1, 0.1 + h, 0.5]
        r = reward([pred], [0], [BOX], [0])
        assert r.num_matches[0, 0].sum() == passes
        assert r.reward[0, 0] == pytest.approx(passes / 10)
        assert r.match_iou[0, 0, 0] == pytest.approx(t + delta if t + delta > 0.5 else 0.0)


def test_empty_prediction_and_no_ground_truth_are_zero():
    gt = np.asarray([BOX])
    r = D.detection_reward(np.zeros((1, 1, 3, 4)), np.zeros((1, 1, 3), int),
                           np.zeros((1, 1, 3), bool), gt[None], np.array([[0]]), np.ones(2))
    assert r.reward[0, 0] == 0.0 and r.match_iou.sum() == 0
    for m in (0, 2):  # no ground truth: zero-width M, or all padding
        r = D.detection_reward(np.asarray([[[BOX]]]), np.zeros((1, 1, 1), int),
                               np.ones((1, 1, 1), bool), np.zeros((1, m, 4)),
                               np.full((1, m), -1), np.ones(2))
        assert r.reward.shape == (1, 1) and r.reward[0, 0] == 0.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="correct_thr=0.42"):
        reward([BOX], [0], [BOX], [0], correct_thr=0.42)
    with pytest.raises(ValueError, match="conf_target='x'"):
        reward([BOX], [0], [BOX], [0], conf_target="x")
    with pytest.raises(ValueError, match=r"labels \[5\]"):
        reward([BOX], [0], [BOX], [5])
    with pytest.raises(ValueError, match="pred_boxes"):
        D.detection_reward(np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 3)), np.ones((1, 1, 3), bool),
                           np.zeros((1, 1, 4)), np.zeros((1, 1)), np.ones(2))


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_box_matches_nothing_in_both_modes(compat, bad):
    """A NaN IoU would win every argmax and steal the match from the good box beside it."""
    broken = [0.1, 0.1, bad, 0.5]
    r = reward([broken, BOX], [0, 0], [BOX], [0], paper_compat=compat)
    assert r.num_matches[0, 0, 0] == 1 and r.num_duplicates[0, 0].sum() == 0
    assert r.match_iou[0, 0, 0] == 0 and r.match_iou[0, 0, 1] == pytest.approx(1.0)
    assert r.reward[0, 0] == pytest.approx(1.0)
    assert np.isfinite(D.pairwise_iou(np.asarray([broken]), np.asarray([BOX]), eps=1e-9)).all()


def test_ragged_ground_truth_lists_are_padded_or_named():
    pred = np.asarray([BOX, [0.6, 0.6, 0.9, 0.9]], float)[None, None].repeat(2, 0)  # [2,1,2,4]
    labels, present = np.zeros((2, 1, 2), int), np.ones((2, 1, 2), bool)
    ragged = [np.asarray([BOX, [0.6, 0.6, 0.9, 0.9]]), np.asarray([BOX])]
    r = D.detection_reward(pred, labels, present, ragged, [[0, 0], [0]], np.ones(2))
    padded = D.detection_reward(pred, labels, present,
                                np.asarray([ragged[0], [BOX, [0, 0, 0, 0]]]),
                                np.asarray([[0, 0], [0, -1]]), np.ones(2))
    np.testing.assert_array_equal(r.reward, padded.reward)
    assert r.num_matches[:, 0, 0].tolist() == [2, 1]
    empty = D.detection_reward(pred, labels, present, [[], []], [[], []], np.ones(2))
    assert (empty.reward == 0).all()
    with pytest.raises(ValueError, match="ground truth of image 1"):
        D.detection_reward(pred, labels, present, ragged, [[0, 0], [0, 0]], np.ones(2))
    with pytest.raises(ValueError, match="2 images of ground-truth boxes, 1 of labels"):
        D.detection_reward(pred, labels, present, ragged, [[0, 0]], np.ones(2))


# --- weights -----------------------------------------------------------------------------------


def test_class_weights_formula():
    n = np.array([100.0, 10.0, 1.0, 0.0])
    w = 1 / (n + 0.05 * n.sum())
    np.testing.assert_allclose(D.class_weights(n, 0.05), 4 * w / w.sum())
    assert D.class_weights(n).sum() == pytest.approx(4.0)
    assert np.all(np.diff(D.class_weights(n)) > 0)  # rarer classes weigh more
    np.testing.assert_array_equal(D.class_weights([0, 0, 0]), [1, 1, 1])
    with pytest.raises(ValueError, match="count 0 needs smooth"):
        D.class_weights([5, 0], smooth=0.0)
    with pytest.raises(ValueError, match=r"\[-1.0, 2.0\]"):
        D.class_weights([-1, 2])


def test_threshold_weights_default_equal_and_released_skewed():
    np.testing.assert_allclose(D.threshold_weights(D.THRESHOLDS), np.full(10, 0.1))
    np.testing.assert_allclose(D.threshold_weights(D.THRESHOLDS, paper_compat=True),
                               RELEASED_WEIGHTS)


# --- the released replay -----------------------------------------------------------------------

C = 5


@pytest.fixture(scope="module")
def fixture():
    rng = np.random.default_rng(1)
    fx = R.synthetic_batch(rng, 6, 8, num_slots=12, max_gt=8, max_level=1000, num_cls=C)
    counts = rng.integers(1, 1000, C)
    # well-conditioned: no IoU within 1e-6 of a threshold (so eps and >/>= cannot flip a match)
    task = DetectionTask(DetectionConfig(max_level=1000, num_slots=12), list("abcde"), counts)
    slots = task.decode(fx["pred_seqs"])
    iou = D.pairwise_iou(slots.boxes, fx["gt_boxes"][:, None])
    assert np.abs(iou[..., None] - THR).min() > 1e-6
    cfg = R.ReleasedConfig(max_level=1000, num_cls=C, cls_counts=tuple(counts.tolist()))
    rel, rel_aux = R.reward_fn(fx["pred_seqs"], fx["gt_seqs"], cfg)
    per_thr = np.stack([R._batched(fx["pred_seqs"], fx["gt_seqs"], t, cfg)["reward"]
                        for t in D.THRESHOLDS], -1)  # [B,N,T]
    return {**fx, "counts": counts, "released": rel, "released_aux": rel_aux,
            "released_per_thr": per_thr,
            "batch": {"boxes": fx["gt_boxes"], "labels": fx["gt_labels"]}}


def make_task(counts, **kw):
    return DetectionTask(DetectionConfig(max_level=1000, num_slots=12, **kw), list("abcde"),
                         counts)


def test_fixture_is_not_trivial(fixture):
    rel = fixture["released"]
    assert (rel > 0).mean() > 0.3 and (fixture["released_aux"]["result"]["nms_penalty"] > 0).any()


def test_paper_compat_equals_the_released_replay(fixture):
    task = make_task(fixture["counts"], paper_compat=True)
    res, _ = task.reward_details(fixture["pred_seqs"], fixture["batch"])
    np.testing.assert_allclose(res.reward, fixture["released"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.per_threshold, fixture["released_per_thr"], atol=1e-6)
    np.testing.assert_allclose(res.match_iou, fixture["released_aux"]["match_iou"], atol=1e-6)
    result = fixture["released_aux"]["result"]
    for t in D.THRESHOLDS:  # the surviving keys hold their last threshold
        key = f"{t:0.1f}"
        last = max(i for i, u in enumerate(D.THRESHOLDS) if f"{u:0.1f}" == key)
        np.testing.assert_array_equal(result[f"num_matches-{key}"], res.num_matches[..., last])
    r, aux = task.reward(fixture["pred_seqs"], fixture["batch"])
    assert r.dtype == np.float32 and aux["match_iou"].shape == (6, 8, 12)


def test_paper_compat_equals_the_replay_on_a_coarse_grid_full_of_ties():
    """16 levels: identical duplicates, equal IoUs and IoUs exactly at thresholds abound, so the
    first-index tie rules and the strict > must agree with the replay's."""
    rng = np.random.default_rng(5)
    fx = R.synthetic_batch(rng, 6, 8, num_slots=8, max_gt=5, max_level=16, num_cls=2)
    pred, gt = fx["pred_seqs"].reshape(6, 8, 8, 6), fx["gt_seqs"].reshape(6, 8, 6)
    for b in range(6):  # exact copies of ground-truth boxes in half the emitted slots
        k = int((fx["gt_labels"][b] >= 0).sum())
        copy = (pred[b, :, :, 0] > 0) & (rng.random((8, 8)) < 0.5) & (k > 0)
        pred[b][copy] = gt[b, rng.integers(0, max(k, 1), copy.sum())]
    fx["pred_seqs"] = pred.reshape(6, 8, -1)
    task = DetectionTask(DetectionConfig(max_level=16, num_slots=8, paper_compat=True), "ab",
                         [3, 1])
    res, slots = task.reward_details(fx["pred_seqs"], {"boxes": fx["gt_boxes"],
                                                       "labels": fx["gt_labels"]})
    cfg = R.ReleasedConfig(max_level=16, num_cls=2, cls_counts=(3, 1))
    rel, aux = R.reward_fn(fx["pred_seqs"], fx["gt_seqs"], cfg)
    np.testing.assert_allclose(res.reward, rel, atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.match_iou, aux["match_iou"], atol=1e-6)
    iou = D.pairwise_iou(slots.boxes, fx["gt_boxes"][:, None])
    ok = slots.present[..., None] & (slots.labels[..., None] == fx["gt_labels"][:, None, None])
    assert (np.abs(iou[ok][:, None] - THR) < 1e-9).any()  # exact ties occur among candidates
    assert res.num_duplicates.sum() > 10
    # exact IoU (default) and the released +1e-9 agree on this grid: ties fail ">" either way
    per_thr = np.stack([R._batched(fx["pred_seqs"], fx["gt_seqs"], t, cfg)["reward"]
                        for t in D.THRESHOLDS], -1)
    default = DetectionTask(DetectionConfig(max_level=16, num_slots=8), "ab", [3, 1])
    res_d, _ = default.reward_details(fx["pred_seqs"], {"boxes": fx["gt_boxes"],
                                                        "labels": fx["gt_labels"]})
    np.testing.assert_allclose(res_d.per_threshold, per_thr, atol=1e-9)


def test_default_differs_exactly_by_equal_threshold_weights(fixture):
    per_thr = fixture["released_per_thr"]
    np.testing.assert_allclose(per_thr @ RELEASED_WEIGHTS, fixture["released"], atol=1e-9)
    res, _ = make_task(fixture["counts"]).reward_details(fixture["pred_seqs"], fixture["batch"])
    np.testing.assert_allclose(res.per_threshold, per_thr, atol=1e-6)
    np.testing.assert_allclose(res.reward, per_thr.mean(-1), atol=1e-6)
    assert np.abs(res.reward - fixture["released"]).max() > 1e-3  # and they do differ


# --- pycocotools as the judge ------------------------------------------------------------------


def test_iou_equals_pycocotools_mask_iou():
    rng = np.random.default_rng(2)
    a = np.sort(rng.uniform(0, 1, (20, 2, 2)), axis=1).reshape(20, 4)
    b = np.sort(rng.uniform(0, 1, (15, 2, 2)), axis=1).reshape(15, 4)
    b[0] = a[0]  # identical pair
    b[1] = [0.9, 0.9, 0.95, 0.95]
    ours = D.pairwise_iou(a, b)
    ref = mask_utils.iou(coco_export.pixel_boxes(a, 480, 640),
                         coco_export.pixel_boxes(b, 480, 640), [0] * len(b))
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert ours[0, 0] == pytest.approx(1.0) and (ours > 0).mean() > 0.2


def coco_anns(boxes, labels, scores=None):
    """COCO annotations (100×100 image, id 1) of normalised boxes [K,4] and 0-based labels."""
    xywh = coco_export.pixel_boxes(boxes, 100, 100)
    out = []
    for i, (bb, c) in enumerate(zip(xywh, labels, strict=True)):
        ann = {"id": i + 1, "image_id": 1, "category_id": int(c) + 1,
               "bbox": [float(v) for v in bb], "area": float(bb[2] * bb[3]), "iscrowd": 0}
        if scores is not None:
            ann["score"] = float(scores[i])
        out.append(ann)
    return out


def coco_matches(pred_boxes, pred_labels, present, scores, gt_boxes, gt_labels):
    """Matched ground-truth counts [T] of one sample per pycocotools' COCOeval (area 'all')."""
    cats = [{"id": i + 1, "name": str(i)} for i in range(C)]
    keep = gt_labels >= 0
    gt = {"images": [{"id": 1, "height": 100, "width": 100}], "categories": cats,
          "annotations": coco_anns(gt_boxes[keep], gt_labels[keep])}
    dets = coco_anns(pred_boxes[present], pred_labels[present], scores[present])
    with contextlib.redirect_stdout(io.StringIO()):
        cg, cd = COCO(), COCO()
        cg.dataset, cd.dataset = gt, {**gt, "annotations": dets}
        cg.createIndex()
        cd.createIndex()
        ev = COCOeval(cg, cd, "bbox")
        ev.evaluate()
    out = np.zeros(10, int)
    for e in ev.evalImgs:
        if e is not None and e["aRng"] == ev.params.areaRng[0]:
            out += (e["gtMatches"] > 0).sum(-1)
    return out


def test_matched_counts_equal_pycocotools_per_image():
    """Disjoint ground truth makes matching at IoU >= 0.5 unambiguous (a box overlaps at most
    one of them by more than half), so COCOeval's greedy matching by score and the reward's
    best-IoU matching must find the same matched ground truth, duplicates included."""
    rng = np.random.default_rng(3)
    fx = R.synthetic_batch(rng, 4, 6, num_slots=12, max_gt=9, max_level=1000, num_cls=C,
                           disjoint=True)
    task = make_task(np.ones(C))
    res, slots = task.reward_details(fx["pred_seqs"], {"boxes": fx["gt_boxes"],
                                                       "labels": fx["gt_labels"]})
    iou = D.pairwise_iou(slots.boxes, fx["gt_boxes"][:, None])
    assert np.abs(iou[..., None] - THR).min() > 1e-9  # > and >= agree
    scores = rng.uniform(size=slots.present.shape)
    for b in range(4):
        for n in range(6):
            ref = coco_matches(slots.boxes[b, n], slots.labels[b, n], slots.present[b, n],
                               scores[b, n], fx["gt_boxes"][b], fx["gt_labels"][b])
            np.testing.assert_array_equal(res.num_matches[b, n], ref, err_msg=f"{b},{n}")
    assert res.num_matches.sum() > 50 and res.num_duplicates.sum() > 5
