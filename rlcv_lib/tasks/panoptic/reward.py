"""Per-image panoptic quality (PQ): the panoptic task's reward, with panopticapi's rules.

The paper tunes its panoptic model with a per-image PQ whose code is not public; this is ours.
One array program over fixed-size *segment id maps*, the same code in NumPy (float64, the
test oracle and the host reward) and ``jax.numpy`` (jittable, for the RL step)::

    pred_map      int [B,H,W]   0 = void, k = predicted segment k (1..P)
    pred_category int [B,P]     category of predicted segment k at index k-1 (1..C)
    gt_map        int [B,H,W]   0 = void, k = ground-truth segment k (1..G)
    gt_category   int [B,G]     its category (1..C); 0 = no such segment (padding)
    gt_crowd      bool [B,G]    COCO's iscrowd
    gt_area       float [B,G]   its area as its segment info states (panopticapi reads it there)
    -> pq         float [B]

**Rules** (panopticapi's ``pq_compute_single_core`` and ``PQStat.pq_average``, for one image):

* A predicted segment exists where it has pixels; its area is its pixel count.
* A (ground truth, prediction) pair *matches* when their categories are equal, the ground truth
  is not crowd and IoU > 0.5 (strictly); IoU = intersection / (predicted area + ground-truth area
  − intersection − predicted pixels on ground-truth void). With non-overlapping segments an IoU
  above 0.5 makes the match unique.
* True positives: matches (their IoUs summed per category). False negatives: unmatched non-crowd
  ground truth (an unmatched crowd region is none). False positives: unmatched predictions,
  except those with more than half of their pixels on void plus the crowd region of their
  category. panopticapi keeps one crowd region per category, the last one listed in the
  segment info; so do we (the highest segment index of that category).
* Per category c, PQ_c = Σ IoU / (TP + ½ FP + ½ FN); categories with TP + FP + FN = 0 are skipped
  and PQ is the mean over the others.
* **No category counted** (nothing to find and nothing wrongly predicted: void or crowd-only
  ground truth with an empty or fully ignored prediction): panopticapi divides by zero there;
  the reward is **1**, since the prediction is exactly right, and a reward must not punish a
  correct empty answer (nor return NaN).

Intersections come from one histogram of the joint (ground truth, prediction) ids of the whole
batch (:func:`intersections`), O(B·H·W + B·G·P); the rest works on the [B,G,P] table (exact in
float32 for fewer than 2²⁴ pixels per image).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def intersections(gt_map: Any, pred_map: Any, num_gt: int, num_pred: int, xp: Any = np) -> Any:
    """float [B,G+1,P+1]: pixels with ground-truth id g and predicted id p (row and column 0:
    void), one histogram of the joint ids of the whole batch (ids must lie in 0..G, 0..P)."""
    b = gt_map.shape[0]
    cells = (num_gt + 1) * (num_pred + 1)
    ids = xp.int64 if b * cells >= 2 ** 31 else xp.int32
    joint = (gt_map.astype(ids) * (num_pred + 1) + pred_map.astype(ids)).reshape(b, -1)
    joint = joint + (xp.arange(b, dtype=ids) * cells)[:, None]
    if xp is np:
        counts = np.bincount(joint.ravel(), minlength=b * cells).astype(np.float64)
    else:
        counts = xp.bincount(joint.ravel(), length=b * cells).astype(xp.float32)
    return counts.reshape(b, num_gt + 1, num_pred + 1)


def _per_category(values: Any, category: Any, num_categories: int, xp: Any) -> Any:
    """[B,C]: ``values`` [B,K] summed per category (``category`` [B,K] in 1..C; others
    dropped)."""
    onehot = (category[..., None] == xp.arange(1, num_categories + 1)).astype(values.dtype)
    return xp.einsum("bk,bkc->bc", values, onehot)


def pq_counts(pred_map: Any, pred_category: Any, gt_map: Any, gt_category: Any, gt_crowd: Any,
              gt_area: Any, num_categories: int, xp: Any = np) -> dict[str, Any]:
    """Per category ``tp``, ``fp``, ``fn``, ``iou`` (summed IoU of the matches), each [B,C]
    (category c at index c-1), and ``matched_pred`` bool [B,P], ``ignored_pred`` bool [B,P],
    ``pred_area`` [B,P] (module docstring). ``xp``: ``numpy`` (float64) or ``jax.numpy``."""
    num_pred, num_gt = pred_category.shape[-1], gt_category.shape[-1]
    inter = intersections(gt_map, pred_map, num_gt, num_pred, xp)  # [B,G+1,P+1], 0: void
    pred_area = inter[:, :, 1:].sum(1)  # [B,P]
    on_void = inter[:, 0, 1:]  # [B,P] predicted pixels on ground-truth void
    inter = inter[:, 1:, 1:]  # [B,G,P]
    gt_real = gt_category > 0
    same = (gt_category[:, :, None] == pred_category[:, None, :]) & gt_real[:, :, None]
    pairable = same & ~gt_crowd[:, :, None] & (pred_area > 0)[:, None, :]
    union = pred_area[:, None, :] + gt_area[:, :, None] - inter - on_void[:, None, :]
    iou = xp.where(pairable, inter / xp.where(union > 0, union, 1.0), 0.0)
    match = pairable & (iou > 0.5)  # [B,G,P], at most one per row and column
    gt_matched, pred_matched = match.any(2), match.any(1)
    # the crowd region of each prediction's category: the last crowd ground truth listed
    crowd_same = same & gt_crowd[:, :, None]  # [B,G,P]
    last = xp.arange(1, num_gt + 1)[None, :, None] * crowd_same
    is_last = crowd_same & (last == last.max(1, keepdims=True, initial=0))
    on_crowd = (inter * is_last).sum(1)  # [B,P]
    ignored = (pred_area > 0) & ~pred_matched & (
        on_void + on_crowd > 0.5 * xp.where(pred_area > 0, pred_area, 1.0))
    fp = (pred_area > 0) & ~pred_matched & ~ignored
    fn = gt_real & ~gt_crowd & ~gt_matched
    dtype = iou.dtype
    return {"tp": _per_category(pred_matched.astype(dtype), pred_category, num_categories, xp),
            "iou": _per_category((iou * match).sum(1), pred_category, num_categories, xp),
            "fp": _per_category(fp.astype(dtype), pred_category, num_categories, xp),
            "fn": _per_category(fn.astype(dtype), gt_category, num_categories, xp),
            "matched_pred": pred_matched, "ignored_pred": ignored, "pred_area": pred_area}


def pq_from_counts(tp: Any, fp: Any, fn: Any, iou: Any, xp: Any = np) -> Any:
    """[B]: the mean over counted categories of Σ IoU / (TP + ½FP + ½FN); 1 where no category
    is counted (module docstring)."""
    counted = (tp + fp + fn) > 0
    per = iou / xp.where(counted, tp + 0.5 * fp + 0.5 * fn, 1.0)
    n = counted.sum(-1)
    return xp.where(n > 0, (per * counted).sum(-1) / xp.maximum(n, 1), 1.0)


def per_image_pq(pred_map: Any, pred_category: Any, gt_map: Any, gt_category: Any,
                 gt_crowd: Any, gt_area: Any, num_categories: int, xp: Any = np) -> Any:
    """float [B]: the panoptic quality of each image (module docstring for shapes and rules);
    the array program that :func:`pq_reward` checks the inputs of."""
    c = pq_counts(pred_map, pred_category, gt_map, gt_category, gt_crowd, gt_area,
                  num_categories, xp)
    return pq_from_counts(c["tp"], c["fp"], c["fn"], c["iou"], xp)


def check_inputs(pred_map: np.ndarray, pred_category: np.ndarray, gt_map: np.ndarray,
                 gt_category: np.ndarray, gt_crowd: np.ndarray, gt_area: np.ndarray,
                 num_categories: int) -> None:
    """Raises ValueError naming the first inconsistent shape or value."""
    b = np.shape(pred_map)[0]
    if np.ndim(pred_map) != 3 or np.shape(gt_map) != np.shape(pred_map):
        raise ValueError(f"pred_map and gt_map must be [B,H,W] of one shape, got "
                         f"{np.shape(pred_map)} and {np.shape(gt_map)}")
    for name, a, n in (("pred_category", pred_category, None), ("gt_category", gt_category, None),
                       ("gt_crowd", gt_crowd, np.shape(gt_category)),
                       ("gt_area", gt_area, np.shape(gt_category))):
        if np.ndim(a) != 2 or np.shape(a)[0] != b or (n is not None and np.shape(a) != n):
            raise ValueError(f"{name} must be [B={b},K]" + (f" like gt_category {n}" if n else "")
                             + f", got {np.shape(a)}")
    for name, ids, k in (("pred_map", pred_map, np.shape(pred_category)[1]),
                         ("gt_map", gt_map, np.shape(gt_category)[1])):
        if np.size(ids) and (np.min(ids) < 0 or np.max(ids) > k):
            raise ValueError(f"{name} holds ids outside 0..{k} (its segment table's size)")
    for name, cat in (("pred_category", pred_category), ("gt_category", gt_category)):
        if np.size(cat) and (np.min(cat) < 0 or np.max(cat) > num_categories):
            raise ValueError(f"{name} holds categories outside 0..{num_categories}")
    # a predicted segment with pixels needs a category (panopticapi's check)
    num_pred = np.shape(pred_category)[1]
    flat = np.asarray(pred_map).reshape(b, -1) + (np.arange(b) * (num_pred + 1))[:, None]
    area = np.bincount(flat.ravel(), minlength=b * (num_pred + 1)).reshape(b, -1)[:, 1:]
    bad = np.argwhere((area > 0) & (np.asarray(pred_category) == 0))
    if len(bad):
        i = int(bad[0, 0])
        raise ValueError(f"image {i}: predicted segments {(bad[bad[:, 0] == i, 1] + 1).tolist()} "
                         "have pixels but category 0")
    if not np.all(np.isfinite(gt_area)) or np.any(np.asarray(gt_area) < 0):
        raise ValueError("gt_area must be finite and >= 0")


def pq_reward(pred_map: np.ndarray, pred_category: np.ndarray, gt_map: np.ndarray,
              gt_category: np.ndarray, gt_crowd: np.ndarray, gt_area: np.ndarray,
              num_categories: int) -> np.ndarray:
    """float64 [B]: :func:`per_image_pq` in NumPy, inputs checked first."""
    args = [np.asarray(a) for a in (pred_map, pred_category, gt_map, gt_category)]
    crowd, area = np.asarray(gt_crowd, bool), np.asarray(gt_area, np.float64)
    check_inputs(*args, crowd, area, num_categories)
    return per_image_pq(*args, crowd, area, num_categories, xp=np)
