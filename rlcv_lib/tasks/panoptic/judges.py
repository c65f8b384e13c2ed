"""Panoptic's judges beside the reward: panopticapi's PQ/SQ/RQ, segments by size, incoherent
segments, and the minimum-segment-area filter the paper's mechanism is tested against.

Predicted segments are in the format of :func:`~rlcv_lib.tasks.panoptic.reward.per_image_pq`
(``pred_map`` int [B,H,W], 0 = void, k = segment k; ``pred_category`` int [B,P], 1..C)::

    judged = segment_judges(pred_map, pred_cat, gt, num_categories, size_edges=(0.01, 0.05))
    metrics = panopticapi_metrics(examples, pred_map, pred_cat, categories)   # PQ / SQ / RQ

* **Incoherent segments**: predicted segments that match no ground truth and are not excused
  (panopticapi's false positives: no same-category ground truth with IoU > 0.5, and at most
  half of the segment on void or on its category's crowd region). The paper: tuning "removes
  many incoherent predictions, especially for small-scale objects".
* **Sizes**: a predicted segment's area as a fraction of the image, bucketed by ``size_edges``
  (``small`` below the first edge, ``medium``, ``large`` from the last). The scenes world at the
  cpu preset has no COCO-small ground truth, so "small" here means small predicted fragments.
* **panopticapi itself** (:func:`panopticapi_metrics`): the ground truth and the predictions
  written as COCO panoptic PNG + JSON (:mod:`rlcv_lib.data.coco_export`) and scored by its
  ``pq_compute_single_core`` in this process (its multi-process ``pq_compute`` forks, which is
  unsafe once JAX runs threads). Dataset-level PQ pools TP/FP/FN over all images per category,
  so it differs from the mean per-image PQ the reward averages.
* **Area filter** (:func:`area_filter`): predicted segments below a pixel area become void, the
  simplest post-processing that removes small fragments; its threshold is chosen on validation
  (:func:`choose_min_area`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlcv_lib.data import coco_export
from rlcv_lib.tasks.panoptic import reward

SIZES = ("small", "medium", "large")
"""The predicted-segment size buckets of :func:`segment_judges`."""


def segment_areas(pred_map: np.ndarray, num_pred: int) -> np.ndarray:
    """int [B,P]: the pixel count of each predicted segment 1..P (0 where absent)."""
    b = pred_map.shape[0]
    flat = pred_map.reshape(b, -1).astype(np.int64) + (np.arange(b) * (num_pred + 1))[:, None]
    return np.bincount(flat.ravel(), minlength=b * (num_pred + 1)).reshape(b, -1)[:, 1:]


def area_filter(pred_map: np.ndarray, pred_category: np.ndarray, min_area: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The segments of at least ``min_area`` pixels; smaller ones become void (map 0, category
    0). ``min_area`` 0 returns the input unchanged."""
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    pred_map, pred_category = np.asarray(pred_map), np.asarray(pred_category)
    keep = segment_areas(pred_map, pred_category.shape[1]) >= min_area  # [B,P]
    keep_id = np.concatenate([np.zeros((len(keep), 1), bool), keep], 1)  # id 0 stays void
    b = pred_map.shape[0]
    kept = np.take_along_axis(keep_id, pred_map.reshape(b, -1), 1).reshape(pred_map.shape)
    return (np.where(kept, pred_map, 0).astype(pred_map.dtype),
            np.where(keep, pred_category, 0).astype(pred_category.dtype))


def size_bucket(fraction: np.ndarray, size_edges: Sequence[float]) -> np.ndarray:
    """int: the index into :data:`SIZES` of each area ``fraction`` of the image."""
    lo, hi = size_edges
    if not 0 < lo < hi < 1:
        raise ValueError(f"size_edges must be two fractions 0 < small < large < 1, got "
                         f"{tuple(size_edges)}")
    return np.digitize(fraction, [lo, hi])


def incoherent_segments(counts: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool [B,P]: the predicted segments with pixels that match nothing and are not excused
    (module docstring), from :func:`~rlcv_lib.tasks.panoptic.reward.pq_counts`'s output."""
    return (counts["pred_area"] > 0) & ~counts["matched_pred"] & ~counts["ignored_pred"]


def segment_judges(pred_map: np.ndarray, pred_category: np.ndarray,
                   gt: Mapping[str, np.ndarray], num_categories: int,
                   size_edges: Sequence[float]) -> dict[str, np.ndarray]:
    """Per image (each [B]): ``pq`` (the reward's per-image PQ), ``segments`` (predicted
    segments with pixels), ``incoherent`` (those matching nothing and not excused, module
    docstring), and for each size of :data:`SIZES` ``segments_<size>`` and
    ``incoherent_<size>``. ``gt``: the ``gt_map``, ``gt_category``, ``gt_crowd``, ``gt_area``
    tables of a stage I or stage II batch."""
    c = reward.pq_counts(pred_map, pred_category, gt["gt_map"], gt["gt_category"],
                         gt["gt_crowd"], gt["gt_area"], num_categories)
    pq = reward.pq_from_counts(c["tp"], c["fp"], c["fn"], c["iou"])
    present, incoherent = c["pred_area"] > 0, incoherent_segments(c)
    bucket = size_bucket(c["pred_area"] / np.prod(pred_map.shape[1:]), size_edges)
    out = {"pq": pq, "segments": present.sum(1).astype(np.float64),
           "incoherent": incoherent.sum(1).astype(np.float64)}
    for i, size in enumerate(SIZES):
        out[f"segments_{size}"] = (present & (bucket == i)).sum(1).astype(np.float64)
        out[f"incoherent_{size}"] = (incoherent & (bucket == i)).sum(1).astype(np.float64)
    return out


def mean_judges(judged: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The mean over images of each per-image judge of :func:`segment_judges`."""
    return {k: float(np.mean(v)) for k, v in judged.items()}


def prediction_infos(pred_map: np.ndarray, pred_category: np.ndarray
                     ) -> list[list[dict[str, int]]]:
    """Each image's segment infos (``id`` k, ``category_id``) of the segments with pixels, in
    the COCO panoptic format (panopticapi computes predicted areas from the PNG)."""
    areas = segment_areas(np.asarray(pred_map), np.shape(pred_category)[1])
    return [[{"id": k + 1, "category_id": int(cat[k])} for k in np.flatnonzero(area > 0)]
            for area, cat in zip(areas, np.asarray(pred_category), strict=True)]


def panopticapi_metrics(examples: Sequence[Mapping[str, Any]], pred_map: np.ndarray,
                        pred_category: np.ndarray, categories: Sequence[Mapping[str, Any]],
                        workdir: str | Path | None = None) -> dict[str, float]:
    """panopticapi's dataset-level ``PQ``, ``SQ``, ``RQ`` (percent) for ``All``, ``Things`` and
    ``Stuff`` (keys ``PQ``, ``PQ_th``, ``PQ_st``, ``SQ``, ...), and ``n`` (categories counted)
    of predictions on ``examples`` (scenes examples with ``panoptic``, ``segments``,
    ``image_id``), through its ``pq_compute_single_core`` on PNG + JSON files written into
    ``workdir`` (a temporary directory when None). A subset with no category counted (e.g. no
    stuff at all) is NaN: panopticapi divides by zero there."""
    from panopticapi.evaluation import pq_compute_single_core

    if len(examples) != len(pred_map):
        raise ValueError(f"{len(examples)} examples but {len(pred_map)} predicted maps")
    with contextlib.ExitStack() as stack:
        root = Path(workdir if workdir is not None else
                    stack.enter_context(tempfile.TemporaryDirectory()))
        ids = [int(e["image_id"]) for e in examples]
        gt = coco_export.write_panoptic(ids, [e["panoptic"] for e in examples],
                                        [e["segments"] for e in examples], categories,
                                        str(root / "gt"))
        pred = coco_export.write_panoptic(ids, list(np.asarray(pred_map)),
                                          prediction_infos(pred_map, pred_category), categories,
                                          str(root / "pred"))
        (root / "gt.json").write_text(json.dumps(gt))
        (root / "pred.json").write_text(json.dumps(pred))
        cats = {int(c["id"]): dict(c) for c in gt["categories"]}
        pairs = list(zip(copy.deepcopy(gt["annotations"]), pred["annotations"], strict=True))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress per 100 images
            stat = pq_compute_single_core(0, pairs, str(root / "gt"), str(root / "pred"), cats)
    out: dict[str, float] = {}
    for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
        try:
            res, _ = stat.pq_average(cats, isthing=isthing)
        except ZeroDivisionError:
            res = {"pq": np.nan, "sq": np.nan, "rq": np.nan, "n": 0}
        for k in ("pq", "sq", "rq"):
            out[f"{k.upper()}{suffix}"] = 100 * float(res[k])
        if not suffix:
            out["n"] = int(res["n"])
    return out


def choose_min_area(judge: Any, candidates: Sequence[int]) -> tuple[int, dict[int, float]]:
    """(the candidate with the highest ``judge(min_area)``, every candidate's value): the area
    filter's threshold choice (ties keep the smaller threshold)."""
    if not candidates:
        raise ValueError("no area filter candidates given")
    values = {int(a): float(judge(int(a))) for a in sorted(candidates)}
    best = max(values, key=lambda a: (values[a], -a))
    return best, values
