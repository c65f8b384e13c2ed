"""The detection reward of "Tuning computer vision models with task rewards", vectorised.

For one sample (S predicted slots) against its image's M ground-truth boxes, at an IoU
threshold ``t``::

    1. candidates: pairs with IoU > t, both boxes present, same class;
    2. each prediction keeps its best candidate ground truth (highest IoU; first on ties);
    3. each ground truth takes its best kept prediction (first on ties): it is *matched*;
    4. a kept pair that its ground truth did not take is a *duplicate* (a second box on an
       object that is already found). Unmatched false positives cost nothing.

    reward_t = Σ_{matched g} w[class g] − nms_w · Σ_{duplicates p} w[class p]

and the sample's reward is ``Σ_t W_t · reward_t`` over the thresholds 0.50:0.05:0.95 with the
weights :func:`threshold_weights`: equal (default, the mean the paper describes) or, with
``paper_compat=True``, the weights the released code really applies (1, 2, 2, 3, 2 tenths on IoU
0.5, 0.6, 0.7, 0.85, 0.95; see :func:`threshold_weights`). ``paper_compat`` also takes the
released IoU, whose denominator carries ``+1e-9``; the default IoU is exact (it equals
``pycocotools.mask.iou``).

Class weights (:func:`class_weights`): ``w_c ∝ 1 / (n_c + smooth · Σ n)`` from training-set class
counts ``n``, rescaled to sum to the number of classes (rare classes weigh more).

Confidence targets: ``match_iou[s]`` is the IoU of slot ``s`` with the ground truth it kept at
``correct_thr`` (0.5), 0 if none. The released target gives a duplicate its full IoU
(``conf_target="iou"``); ``conf_target="matched"`` gives duplicates 0, so a confident duplicate is
taught to doubt itself. The task turns these into the confidence loss.

The same array code runs in NumPy (float64, :func:`detection_reward`, with input checks: the
test oracle and the default) and in ``jax.numpy`` (:func:`detection_reward_jax`, traceable, for
the RL step's ``rl.device_reward``). Everything is [B, N, ...] arrays, a handful of calls per
batch (no Python loop over images, samples or thresholds): since the candidates at threshold t
are the valid pairs with IoU > t, one argmax per side (each prediction's best ground truth, each
ground truth's best prediction) decides the matching at every threshold at once, with the
released first-index tie rule; only the final comparisons with the T thresholds carry a
threshold axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
"""COCO's IoU thresholds, written as the released config writes them (literals, not arange)."""

RELEASED_IOU_EPS = 1e-9
"""The released IoU adds this to its denominator (``paper_compat`` uses it; default 0)."""


class DetectionReward(NamedTuple):
    reward: np.ndarray  # float64 [B,N]: Σ_t W_t reward_t
    per_threshold: np.ndarray  # float64 [B,N,T]: reward_t
    num_matches: np.ndarray  # int64 [B,N,T]: matched ground-truth boxes
    num_duplicates: np.ndarray  # int64 [B,N,T]: duplicate predictions
    nms_penalty: np.ndarray  # float64 [B,N,T]: class-weighted duplicates (before nms_w)
    match_iou: np.ndarray  # float64 [B,N,S]: confidence target IoU of each slot


def class_weights(counts: Sequence[float], smooth: float = 0.05) -> np.ndarray:
    """float64 [C]: ``w_c ∝ 1/(n_c + smooth·Σn)``, rescaled to sum to C. All-zero counts (no
    statistics) give equal weights 1."""
    n = np.asarray(counts, np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"class counts must be a non-empty vector, got shape {n.shape}")
    if (n < 0).any() or not np.isfinite(n).all():
        raise ValueError(f"class counts must be finite and >= 0, got {n.tolist()}")
    if smooth < 0:
        raise ValueError(f"smooth={smooth} must be >= 0")
    if n.sum() == 0:
        return np.ones_like(n)
    with np.errstate(divide="ignore"):
        w = 1.0 / (n + smooth * n.sum())
    if not np.isfinite(w).all():
        raise ValueError(f"a class with count 0 needs smooth > 0 (counts {n.tolist()})")
    return len(n) * w / w.sum()


def threshold_weights(thresholds: Sequence[float], paper_compat: bool = False) -> np.ndarray:
    """float64 [T] weights of the per-threshold rewards in the final reward (sum 1).

    Default: equal. ``paper_compat``: the released code stores each threshold's result under the
    key ``f"{thr:0.1f}"`` (so 0.55 and 0.6 share "0.6", and the later one overwrites it), then
    averages over all T thresholds by reading those keys. Replayed literally here: the result is
    how often each threshold's own value is read, over T.
    """
    thresholds = [float(t) for t in thresholds]
    n = len(thresholds)
    if not paper_compat:
        return np.full(n, 1.0 / n)
    store: dict[str, int] = {}
    for i, thr in enumerate(thresholds):
        store[f"{thr:0.1f}"] = i  # the last threshold written under a key wins
    reads = [store[f"{thr:0.1f}"] for thr in thresholds]  # the mean reads every key
    return np.bincount(reads, minlength=n) / n


def pairwise_iou(a: Any, b: Any, eps: float = 0.0, xp: Any = np) -> Any:
    """IoU [..., S, M] of boxes ``a`` [..., S, 4] and ``b`` [..., M, 4] (ymin, xmin, ymax, xmax;
    leading axes broadcast). Areas are absolute values and intersections clipped at 0, so an
    inverted or empty box has IoU 0 with everything, and so has a box with a non-finite
    coordinate (in both forms: a NaN would otherwise win every argmax of the matching).
    ``eps`` > 0 adds it to the denominator (the released formula); ``eps=0`` is exact and a
    pair with empty union gets 0. ``xp``: the array module (``numpy``, float64; or
    ``jax.numpy``, in the inputs' floating dtype, traceable)."""
    if xp is np:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a[..., :, None, :], b[..., None, :, :]
    ih = xp.clip(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), 0, None)
    iw = xp.clip(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ih * iw
    area_a = xp.abs((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]))
    area_b = xp.abs((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]))
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore"):  # inf - inf in a non-finite box: NaN, then 0 below
        if eps:
            iou = inter / (union + eps)
        else:
            iou = xp.where(union > 0, inter / xp.where(union > 0, union, 1.0), 0.0)
    return xp.where(xp.isfinite(iou), iou, 0.0)


def stack_ground_truth(gt_boxes: Any, gt_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """float64 [B,M,4] boxes and int64 [B,M] labels (-1 padded) from arrays of those shapes or
    from per-image lists of [M_i,4] boxes and [M_i] labels (ragged: padded to the largest M_i).
    Raises ValueError naming the image whose boxes and labels do not fit together."""
    if hasattr(gt_boxes, "shape") and hasattr(gt_labels, "shape"):  # NumPy or JAX arrays
        return np.asarray(gt_boxes, np.float64), np.asarray(gt_labels, np.int64)
    if len(gt_boxes) != len(gt_labels):
        raise ValueError(f"{len(gt_boxes)} images of ground-truth boxes, {len(gt_labels)} of "
                         f"labels")
    boxes, labels = [], []
    for i, (b, lab) in enumerate(zip(gt_boxes, gt_labels, strict=True)):
        b, lab = np.asarray(b, np.float64), np.asarray(lab, np.int64)
        if b.size == 0 and lab.size == 0:
            b, lab = b.reshape(0, 4), lab.reshape(0)
        if b.ndim != 2 or b.shape[1] != 4 or lab.shape != (len(b),):
            raise ValueError(f"ground truth of image {i}: boxes {b.shape} and labels "
                             f"{lab.shape} must be [M,4] and [M]")
        boxes.append(b)
        labels.append(lab)
    m = max([len(b) for b in boxes], default=0)
    out_b, out_l = np.zeros((len(boxes), m, 4)), np.full((len(boxes), m), -1, np.int64)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        out_b[i, :len(b)], out_l[i, :len(b)] = b, lab
    return out_b, out_l


def _checked_settings(pred_boxes: Any, pred_labels: Any, pred_present: Any, gt_boxes: Any,
                      gt_labels: Any, thresholds: Sequence[float], correct_thr: float,
                      conf_target: str) -> np.ndarray:
    """The thresholds float64 [T], after checking the shapes (static, so also under jit) and the
    settings; ValueError naming what does not fit."""
    b, n, s = np.shape(pred_present)
    if np.shape(pred_boxes) != (b, n, s, 4) or np.shape(pred_labels) != (b, n, s):
        raise ValueError(f"pred_boxes {np.shape(pred_boxes)} / pred_labels "
                         f"{np.shape(pred_labels)} do not fit pred_present {(b, n, s)}")
    g = np.shape(gt_boxes)
    if len(g) != 3 or g[0] != b or g[2] != 4 or np.shape(gt_labels) != g[:2]:
        raise ValueError(f"gt_boxes {g} / gt_labels {np.shape(gt_labels)} must be "
                         f"[B={b},M,4] / [B,M]")
    if conf_target not in ("iou", "matched"):
        raise ValueError(f"conf_target={conf_target!r}: choose 'iou' or 'matched'")
    thr = np.asarray([float(t) for t in thresholds])
    if float(correct_thr) not in thr:
        raise ValueError(f"correct_thr={correct_thr} is not one of the thresholds {thr.tolist()}")
    return thr


def detection_reward(pred_boxes: np.ndarray, pred_labels: np.ndarray, pred_present: np.ndarray,
                     gt_boxes: np.ndarray, gt_labels: np.ndarray, weights: np.ndarray,
                     thresholds: Sequence[float] = THRESHOLDS, nms_w: float = 0.3,
                     correct_thr: float = 0.5, conf_target: str = "iou",
                     paper_compat: bool = False) -> DetectionReward:
    """The reward of every sample of a batch.

    Args:
      pred_boxes: float [B,N,S,4] normalised (ymin, xmin, ymax, xmax) of the S slots.
      pred_labels: int [B,N,S] 0-based classes (any value where not present).
      pred_present: bool [B,N,S] slots that hold a box.
      gt_boxes: float [B,M,4]; gt_labels: int [B,M], < 0 marks padding (no box); or per-image
        lists of [M_i,4] and [M_i] (:func:`stack_ground_truth`).
      weights: float [C] class weights (:func:`class_weights`).
      thresholds: IoU thresholds; ``correct_thr`` must be one of them.
      nms_w: weight of the duplicate penalty.
      conf_target: "iou" (released: duplicates keep their IoU) or "matched" (duplicates 0).
      paper_compat: released threshold weighting and IoU epsilon.
    """
    pred_boxes = np.asarray(pred_boxes, np.float64)
    gt_boxes, gt_labels = stack_ground_truth(gt_boxes, gt_labels)
    thr = _checked_settings(pred_boxes, pred_labels, pred_present, gt_boxes, gt_labels,
                            thresholds, correct_thr, conf_target)
    b = np.shape(pred_present)[0]
    weights = np.asarray(weights, np.float64)
    c = len(weights)
    if gt_boxes.shape[1] == 0:  # no ground truth anywhere in the batch: one absent box
        gt_boxes, gt_labels = np.zeros((b, 1, 4)), np.full((b, 1), -1)
    gt_labels = np.asarray(gt_labels)
    gt_present = gt_labels >= 0  # [B,M]
    if (gt_labels[gt_present] >= c).any():
        raise ValueError(f"ground-truth labels {np.unique(gt_labels[gt_present]).tolist()} "
                         f"outside the {c} classes")
    pred_present = np.asarray(pred_present, bool)
    p_lab = np.where(pred_present, np.asarray(pred_labels), 0).clip(0, c - 1)  # [B,N,S]
    g_lab = np.where(gt_present, gt_labels, 0)  # [B,M]

    return _reward_core(np, pred_boxes, p_lab, pred_present, gt_boxes, g_lab, gt_present,
                        weights, thr, nms_w, float(correct_thr), conf_target, paper_compat)


def detection_reward_jax(pred_boxes: Any, pred_labels: Any, pred_present: Any, gt_boxes: Any,
                         gt_labels: Any, weights: Any, thresholds: Sequence[float] = THRESHOLDS,
                         nms_w: float = 0.3, correct_thr: float = 0.5, conf_target: str = "iou",
                         paper_compat: bool = False) -> DetectionReward:
    """:func:`detection_reward` in ``jax.numpy``, for a jitted step: the same arguments as
    padded arrays (ground truth [B,M,4] / [B,M] with -1 padding), traceable (only the shapes
    and the static settings are checked), in the boxes' floating dtype (float32 unless x64 is
    on). The NumPy form (float64) is its test oracle; they agree but where an IoU lies within
    float32 rounding of a threshold."""
    import jax.numpy as jnp

    thr = _checked_settings(pred_boxes, pred_labels, pred_present, gt_boxes, gt_labels,
                            thresholds, correct_thr, conf_target)
    b = pred_present.shape[0]
    c = weights.shape[0]
    if gt_boxes.shape[1] == 0:  # no ground truth anywhere in the batch: one absent box
        gt_boxes, gt_labels = jnp.zeros((b, 1, 4), pred_boxes.dtype), jnp.full((b, 1), -1)
    gt_present = gt_labels >= 0
    p_lab = jnp.clip(jnp.where(pred_present, pred_labels, 0), 0, c - 1)
    g_lab = jnp.clip(jnp.where(gt_present, gt_labels, 0), 0, c - 1)
    return _reward_core(jnp, pred_boxes, p_lab, pred_present, gt_boxes.astype(pred_boxes.dtype),
                        g_lab, gt_present, weights, thr, nms_w, float(correct_thr), conf_target,
                        paper_compat)


def _reward_core(xp: Any, pred_boxes, p_lab, pred_present, gt_boxes, g_lab, gt_present, weights,
                 thr, nms_w: float, correct_thr: float, conf_target: str,
                 paper_compat: bool) -> DetectionReward:
    """The reward of :func:`detection_reward` on checked, padded arrays, in array module
    ``xp`` (NumPy, or ``jax.numpy`` inside a jitted step: the same code, the same steps)."""
    m, s = gt_boxes.shape[1], pred_present.shape[-1]
    weights = xp.asarray(weights)
    eps = RELEASED_IOU_EPS if paper_compat else 0.0
    iou = pairwise_iou(pred_boxes, gt_boxes[:, None], eps, xp)  # [B,N,S,M]
    ok = (pred_present[..., :, None] & gt_present[:, None, None, :]
          & (p_lab[..., :, None] == g_lab[:, None, None, :]))  # [B,N,S,M]

    # Candidates at threshold t are the ok pairs with IoU > t. So a prediction's best candidate
    # at any t is its best ok pair overall, if that pair clears t (ties: the same first index),
    # and a ground truth's best kept prediction likewise: one argmax each serves every threshold.
    iou_ok = xp.where(ok, iou, 0.0)  # [B,N,S,M]
    g_best = iou_ok.argmax(-1)  # [B,N,S] the ground truth each prediction keeps
    v = xp.take_along_axis(iou_ok, g_best[..., None], -1)[..., 0]  # [B,N,S] its IoU
    kept = xp.where(xp.arange(m) == g_best[..., None], iou_ok, 0.0)  # [B,N,S,M]
    p_best = kept.argmax(-2)  # [B,N,M] the prediction each ground truth takes
    u = xp.take_along_axis(kept, p_best[..., None, :], -2)[..., 0, :]  # [B,N,M] its IoU
    taken = xp.take_along_axis(p_best, g_best, -1) == xp.arange(s)  # [B,N,S]

    matched_gt = u[..., None] > thr  # [B,N,M,T]
    dup = (v[..., None] > thr) & ~taken[..., None]  # [B,N,S,T] kept, not taken
    w_gt = weights[g_lab][:, None, :, None]  # [B,1,M,1]
    w_pred = weights[p_lab][..., None]  # [B,N,S,1]
    nms_penalty = xp.sum(dup * w_pred, -2)  # [B,N,T]
    per_thr = xp.sum(matched_gt * w_gt, -2) - nms_w * nms_penalty  # [B,N,T]

    ct = correct_thr
    pairs = v > ct if conf_target == "iou" else (v > ct) & taken
    return DetectionReward(
        reward=per_thr @ xp.asarray(threshold_weights(thr, paper_compat)),
        per_threshold=per_thr,
        num_matches=matched_gt.sum(-2),
        num_duplicates=dup.sum(-2),
        nms_penalty=nms_penalty,
        match_iou=xp.where(pairs, v, 0.0))
