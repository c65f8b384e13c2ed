"""Per-image PQ: equal to panopticapi's own per-image computation on generated pairs, in NumPy
and jitted JAX; the documented empty case; bad input named."""

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from panopticapi.evaluation import pq_compute_single_core
from panopticapi.utils import id2rgb
from PIL import Image

from rlcv_lib.tasks.panoptic import reward as pq

NUM_CATEGORIES = 6
CATEGORIES = {c: {"id": c, "name": str(c), "isthing": int(c <= 3)}
              for c in range(1, NUM_CATEGORIES + 1)}
SIZE = 16


def _paint(rng, num, size=SIZE, base=None):
    """An id map with ``num`` random rectangles painted in order (later ones on top)."""
    out = np.zeros((size, size), np.int64) if base is None else base.copy()
    for k in range(1, num + 1):
        y, x = rng.integers(0, size - 2, 2)
        h, w = rng.integers(2, size // 2 + 3, 2)
        out[y:y + h, x:x + w] = k
    return out


def _jitter(rng, ids, num):
    """A prediction near ``ids``: each segment shifted by up to 2 pixels, some dropped, some
    split, some void painted, ids renumbered to 1..P."""
    out = np.zeros_like(ids)
    for k in range(1, num + 1):
        if rng.uniform() < 0.15:
            continue
        dy, dx = rng.integers(-2, 3, 2)
        mask = np.roll(ids == k, (dy, dx), (0, 1))
        out[mask] = k
        if rng.uniform() < 0.2:  # split: the lower half becomes another segment
            rows = np.flatnonzero(mask.any(1))
            if len(rows) > 1:
                half = mask & (np.arange(ids.shape[0])[:, None] >= rows[len(rows) // 2])
                out[half] = num + k
    if rng.uniform() < 0.3:
        y, x = rng.integers(0, ids.shape[0] - 3, 2)
        out[y:y + 3, x:x + 3] = 0
    present = [int(k) for k in np.unique(out) if k > 0]
    renumber = np.zeros(2 * num + 1, np.int64)
    renumber[present] = np.arange(1, len(present) + 1)
    return renumber[out], len(present)


def random_case(seed):
    """(pred_map, pred_category, gt_map, gt_category, gt_crowd, gt_area) of one image."""
    rng = np.random.default_rng(seed)
    g = 0 if rng.uniform() < 0.04 else int(rng.integers(1, 7))
    gt = _paint(rng, g)
    if rng.uniform() < 0.3:  # a void band
        gt[:, : rng.integers(1, 5)] = 0
    gt_category = rng.integers(1, NUM_CATEGORIES + 1, g)
    gt_crowd = rng.uniform(size=g) < 0.15
    gt_area = np.array([(gt == k).sum() for k in range(1, g + 1)], np.float64)
    pred, p = (np.zeros_like(gt), 0) if rng.uniform() < 0.1 else _jitter(rng, gt, g)
    source = [int(np.bincount(gt[pred == j].ravel(), minlength=g + 1).argmax())
              for j in range(1, p + 1)]  # the ground truth each predicted segment came from
    pred_category = np.array([gt_category[s - 1] if s and rng.uniform() < 0.8
                              else rng.integers(1, NUM_CATEGORIES + 1) for s in source],
                             np.int64)
    return pred, pred_category.reshape(p), gt, gt_category, gt_crowd, gt_area


def panopticapi_pq(tmp_path, case):
    """The per-image PQ of panopticapi: its own single-core pass over PNG + JSON files and its
    ``pq_average``; None where it divides by zero (no category counted)."""
    pred, pred_category, gt, gt_category, gt_crowd, gt_area = case
    (tmp_path / "gt").mkdir(exist_ok=True)
    (tmp_path / "pred").mkdir(exist_ok=True)
    Image.fromarray(id2rgb(gt)).save(tmp_path / "gt" / "1.png")
    Image.fromarray(id2rgb(pred)).save(tmp_path / "pred" / "1.png")
    gt_ann = {"image_id": 1, "file_name": "1.png", "segments_info": [
        {"id": k + 1, "category_id": int(c), "iscrowd": int(w), "area": float(a)}
        for k, (c, w, a) in enumerate(zip(gt_category, gt_crowd, gt_area, strict=True))]}
    present = [int(k) for k in np.unique(pred) if k > 0]
    pred_ann = {"image_id": 1, "file_name": "1.png", "segments_info": [
        {"id": k, "category_id": int(pred_category[k - 1])} for k in present]}
    with contextlib.redirect_stdout(io.StringIO()):
        stat = pq_compute_single_core(0, [(gt_ann, pred_ann)], str(tmp_path / "gt"),
                                      str(tmp_path / "pred"), CATEGORIES)
    try:
        return stat.pq_average(CATEGORIES, None)[0]["pq"]
    except ZeroDivisionError:
        return None


def batch(cases):
    """Cases padded to one batch: segment tables to the largest, category 0 = no segment."""
    p = max(1, max(len(c[1]) for c in cases))
    g = max(1, max(len(c[3]) for c in cases))

    def pad(a, n, value=0):
        return np.concatenate([a, np.full(n - len(a), value, a.dtype)])

    return (np.stack([c[0] for c in cases]),
            np.stack([pad(c[1].astype(np.int64), p) for c in cases]),
            np.stack([c[2] for c in cases]),
            np.stack([pad(c[3].astype(np.int64), g) for c in cases]),
            np.stack([pad(c[4].astype(bool), g, False) for c in cases]),
            np.stack([pad(c[5].astype(np.float64), g) for c in cases]))


def ours(case):
    return pq.pq_reward(*batch([case]), NUM_CATEGORIES)[0]


def test_equals_panopticapi_on_generated_pairs(tmp_path):
    cases = [random_case(seed) for seed in range(300)]
    want = [panopticapi_pq(tmp_path, c) for c in cases]
    got = pq.pq_reward(*batch(cases), NUM_CATEGORIES)
    assert np.isfinite(got).all()
    assert sum(w is None for w in want) >= 3 and sum(0 < (w or 0) < 1 for w in want) > 100
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        assert g == pytest.approx(1.0 if w is None else w, abs=1e-12), (i, cases[i])


def test_jitted_jax_equals_numpy():
    cases = [random_case(seed) for seed in range(300, 364)]
    args = batch(cases)
    fn = jax.jit(lambda *a: pq.per_image_pq(*a, NUM_CATEGORIES, xp=jnp))
    np.testing.assert_allclose(np.asarray(fn(*args)), pq.pq_reward(*args, NUM_CATEGORIES),
                               atol=1e-6)


def _square_case(pred_rows):
    """Ground truth: rows 0..7 of a 16-wide image are segment 1 (category 1), the rest a crowd
    region of category 2 (not void, and never a false negative); the prediction (category 1)
    covers ``pred_rows`` rows from the top."""
    gt = np.full((SIZE, SIZE), 2, np.int64)
    gt[:8] = 1
    pred = np.zeros_like(gt)
    pred[:pred_rows] = 1
    return (pred, np.array([1]), gt, np.array([1, 2]), np.array([False, True]),
            np.array([128.0, 128.0]))


def test_iou_just_above_and_just_below_a_half(tmp_path):
    # 8 ground-truth rows; prediction of 16 rows: IoU 8/16 = 0.5 exactly -> no match
    # (panopticapi's strict >: a false negative and a false positive), 15 rows: 8/15 -> a match
    for rows in (15, 16, 5, 4, 8):
        case = _square_case(rows)
        assert ours(case) == pytest.approx(panopticapi_pq(tmp_path, case), abs=1e-12), rows
    assert ours(_square_case(16)) == 0 and ours(_square_case(15)) == pytest.approx(8 / 15)
    assert ours(_square_case(8)) == 1 and ours(_square_case(4)) == 0


def test_crowd_and_void_exemptions(tmp_path):
    gt = np.zeros((SIZE, SIZE), np.int64)
    gt[:8] = 1  # crowd of category 2
    gt[8:12] = 2  # a normal segment of category 1
    base = (np.array([2, 1]), np.array([True, False]), np.array([128.0, 64.0]))
    pred = np.zeros_like(gt)
    pred[8:12] = 1  # matches segment 2
    pred[:6, :6] = 2  # on the crowd, its category: ignored
    pred[12:, :10] = 3  # on void: ignored
    pred[0:3, 8:] = 4  # on the crowd, another category: a false positive
    case = (pred, np.array([1, 2, 2, 3]), gt, *base)
    want = panopticapi_pq(tmp_path, case)
    assert ours(case) == pytest.approx(want, abs=1e-12)
    assert ours(case) == pytest.approx((1.0 + 0.0) / 2)  # category 1: PQ 1; category 3: FP
    # an unmatched crowd region is not a false negative: an empty prediction scores 1 (nothing
    # else to find), where panopticapi divides by zero
    crowd_only = np.where(gt == 1, 1, 0)
    empty = (np.zeros_like(gt), np.zeros(0, np.int64), crowd_only, np.array([2]),
             np.array([True]), np.array([128.0]))
    assert panopticapi_pq(tmp_path, empty) is None and ours(empty) == 1.0


def test_defined_rewards_on_edge_cases():
    gt = np.zeros((1, SIZE, SIZE), np.int64)
    none = np.zeros((1, 0), np.int64)
    # void-only ground truth: an empty prediction is right (1)
    assert pq.pq_reward(gt, none, gt, none, none.astype(bool), none.astype(float), 3)[0] == 1
    # a prediction wholly on void is ignored (not a false positive): still nothing wrong
    pred = np.ones_like(gt)
    assert pq.pq_reward(pred, np.array([[1]]), gt, none, none.astype(bool), none.astype(float),
                        3)[0] == 1
    # ... and an empty prediction on an image with things scores 0, never NaN
    gt1 = np.ones_like(gt)
    r = pq.pq_reward(gt, none, gt1, np.array([[1]]), np.array([[False]]), np.array([[256.0]]),
                     3)
    assert r[0] == 0 and np.isfinite(r).all()


def test_bad_input_is_named():
    case = batch([_square_case(8)])
    with pytest.raises(ValueError, match="one shape"):
        pq.pq_reward(case[0][:, :4], *case[1:], NUM_CATEGORIES)
    with pytest.raises(ValueError, match="ids outside"):
        pq.pq_reward(case[0] + 5, *case[1:], NUM_CATEGORIES)
    with pytest.raises(ValueError, match="categories outside"):
        pq.pq_reward(case[0], case[1] + 10, *case[2:], NUM_CATEGORIES)
    with pytest.raises(ValueError, match="category 0"):
        pq.pq_reward(case[0], case[1] * 0, *case[2:], NUM_CATEGORIES)
    with pytest.raises(ValueError, match="gt_area"):
        pq.pq_reward(*case[:5], case[5] * np.nan, NUM_CATEGORIES)
    with pytest.raises(ValueError, match="gt_crowd"):
        pq.pq_reward(*case[:4], case[4][:, :0], case[5], NUM_CATEGORIES)
