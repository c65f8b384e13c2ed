"""Panoptic's UViM stage II: the code generator from the image, and its MLE pretraining.

The stage II model reads the RGB image on [0, 1] and emits stage I's codes of the two one-hot
maps (semantics, instances); the frozen stage I decoder turns codes plus the image (on [−1, 1],
its context) into logits, decoded into segments with categories (:func:`~rlcv_lib.tasks.
panoptic.task.decode_panoptic`; any code sequence gives a valid map, possibly all void)::

    cfg = get_config("cpu", task="panoptic")
    task = make_task(cfg)                              # loads the shipped stage I (frozen)
    run = core.pretrain.pretrain(STAGE2_RECIPE, cfg, "runs/panoptic_stage2")

The reward is the per-image PQ of the decoded segments against the image's full ground truth
(:func:`~rlcv_lib.tasks.panoptic.reward.pq_reward`, panopticapi's rules); the evaluator's
judges (:func:`judge`): the mean PQ and the predicted segments per image beside the true ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rlcv_lib.tasks.panoptic import reward
from rlcv_lib.tasks.panoptic import task as pan
from rlcv_lib.tasks.uvim import stage2

GROUND_TRUTH = ("gt_map", "gt_category", "gt_crowd", "gt_area")
"""The stage I batch's ground-truth tables a stage II batch keeps (the reward reads them)."""


def segments(outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(``pred_map`` int32 [B,H,W], ``pred_category`` int32 [B,N]) of decoded stage I logits."""
    return pan.decode_panoptic(outputs["semantics"], outputs["instances"])


def score(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """The reward: per-image PQ (float64 [B]) of the decoded segments against the ground truth
    of the stage II batch (its ``gt_*`` tables)."""
    pred_map, pred_cat = segments(outputs)
    num_categories = batch["semantics"].shape[-1] - 1
    return reward.pq_reward(pred_map, pred_cat, batch["gt_map"], batch["gt_category"],
                            batch["gt_crowd"], batch["gt_area"], num_categories)


def judge(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean ``pq`` and the predicted and true segments per image (``segments``,
    ``gt_segments``) of decoded outputs on a stage II batch."""
    pred_map, pred_cat = segments(outputs)
    num_categories = batch["semantics"].shape[-1] - 1
    pq = reward.per_image_pq(pred_map, pred_cat, batch["gt_map"], batch["gt_category"],
                             batch["gt_crowd"], batch["gt_area"], num_categories)
    present = np.stack([np.isin(np.arange(1, pred_cat.shape[1] + 1), m) for m in pred_map])
    return {"pq": float(np.mean(pq)),
            "segments": float(np.mean(np.sum(present & (pred_cat > 0), 1))),
            "gt_segments": float(np.mean(np.sum(batch["gt_category"] > 0, 1)))}


def make_task(cfg: Any, cache_dir: str | None = None, stage1_model: Any = None
              ) -> stage2.Stage2Task:
    """Panoptic's stage II task of ``cfg``: its frozen stage I model is ``stage1_model``, else
    the shipped one (or, with none shipped for the preset, stage I trained here first)."""
    s1 = pan.make_stage1_task(cfg, cache_dir)
    stage1_model = stage2.frozen_stage1(pan.STAGE1_RECIPE, cfg, cache_dir, stage1_model)
    return stage2.Stage2Task(
        name="panoptic", stage1=s1, frozen=stage1_model,
        input_image=lambda batch: np.asarray(batch["image"], np.float32), score=score,
        judge=judge, keep=GROUND_TRUTH, cache_dir=cache_dir)


STAGE2_RECIPE = stage2.make_recipe("panoptic", make_task)
"""Stage II pretraining of panoptic (``python -m rlcv_lib pretrain panoptic cpu``)."""
