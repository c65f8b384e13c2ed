"""Colorization's UViM stage II: the code generator from the grey image, and its MLE pretraining.

The stage II model reads the grey image on [0, 1] (BT.601 luma on three channels, what the shared
scenes encoder also reads for its grey share) and emits stage I's 16 codes of the colour image;
the frozen stage I decoder turns codes plus the grey image (on [−1, 1], its context) into colour
(:mod:`rlcv_lib.tasks.uvim.stage2`)::

    cfg = get_config("cpu", task="colorization")
    task = make_task(cfg)                              # loads the shipped stage I (frozen)
    run = core.pretrain.pretrain(STAGE2_RECIPE, cfg, "runs/colorization_stage2")

The reward is the colourfulness of the decoded image (clipped to [−1, 1]); the evaluator's
judges (:func:`judge`): PSNR against the true colours, the luma PSNR of the decoded image against
the grey input (does the colourizer keep the image it was given?) and the colourfulness.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rlcv_lib.tasks.colorization import task as col
from rlcv_lib.tasks.colorization.reward import colourfulness, colourfulness_reward
from rlcv_lib.tasks.uvim import stage2


def luma(images: np.ndarray, weights: str = "bt601") -> np.ndarray:
    """float [B,H,W]: the grey level of RGB ``images`` [B,H,W,3] (any range)."""
    return np.asarray(images, np.float32) @ np.asarray(col.LUMA_WEIGHTS[weights], np.float32)


def luma_psnr(pred: np.ndarray, context: np.ndarray, weights: str = "bt601") -> np.ndarray:
    """Per-image PSNR in dB [B] of the luma of ``pred`` (clipped to [−1, 1]) against the grey
    input ``context`` [B,H,W,3] on [−1, 1] (peak-to-peak 2): how faithfully a colourizer keeps
    the image it was given."""
    y = luma(np.clip(pred, -1, 1), weights)
    mse = np.mean((y - np.asarray(context)[..., 0]) ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(4.0 / mse)


def score(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """The reward: colourfulness (float64 [B]) of each decoded image, clipped to [−1, 1]."""
    return colourfulness_reward(np.clip(outputs["rgb"], -1, 1))


def judge(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray],
          weights: str = "bt601") -> dict[str, float]:
    """Mean ``colourfulness``, ``psnr`` (colour, against the truth) and ``luma_psnr`` (against
    the grey input) of decoded images on a stage II batch."""
    pred = np.clip(outputs["rgb"], -1, 1)
    return {"colourfulness": float(np.mean(colourfulness(pred))),
            "psnr": float(np.mean(col.psnr(pred, batch["rgb"]))),
            "luma_psnr": float(np.mean(luma_psnr(pred, batch["context"], weights)))}


def make_task(cfg: Any, cache_dir: str | None = None, stage1_model: Any = None
              ) -> stage2.Stage2Task:
    """Colorization's stage II task of ``cfg``: its frozen stage I model is ``stage1_model``, else
    the shipped one (or, with none shipped for the preset, stage I trained here first)."""
    s1 = col.make_stage1_task(cfg, cache_dir)
    stage1_model = stage2.frozen_stage1(col.STAGE1_RECIPE, cfg, cache_dir, stage1_model)
    weights = cfg.colorization.luma
    return stage2.Stage2Task(
        name="colorization", stage1=s1, frozen=stage1_model,
        input_image=lambda batch: col.grey(np.asarray(batch["image"], np.float32), weights),
        score=score, judge=lambda outputs, batch: judge(outputs, batch, weights),
        cache_dir=cache_dir)


STAGE2_RECIPE = stage2.make_recipe("colorization", make_task)
"""Stage II pretraining of colorization (``python -m rlcv_lib pretrain colorization cpu``)."""
