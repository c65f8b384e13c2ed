"""Detection MLE pretraining on the scenes world, its validation curve and the wrong-image control.

The glue between the scenes data (:mod:`rlcv_lib.data`), the pix2seq task
(:mod:`rlcv_lib.tasks.detection.task`), the core MLE step and the trainer::

    cfg = get_config("cpu", overrides={"train.num_steps": 6000}, task="detection")
    run = core.pretrain.pretrain(RECIPE, cfg, "runs/det_mle")   # fit() with a validation curve
    control = core.evaluate.wrong_image_control(RECIPE, run.model, run.task, run.val.batch)

* **Batches** (:func:`make_batch_fn`): step ``s`` is ``Loader.batch(s)`` plus ``tokens`` int32
  [B,L], each example tokenized with its boxes in a random order drawn from
  ``default_rng([seed, s, i])``, so the whole batch is a pure function of (seed, step). The batch
  keeps ``boxes``/``labels`` (what the detection reward reads) next to ``image`` and ``tokens``.
* **Evaluation** (:func:`make_evaluator`): greedy decoding under the grammar on a fixed set of
  validation images; each box scored by its class-token probability from a teacher-forced pass
  over the greedy tokens (pix2seq's rule: an MLE model's confidence tokens are untrained);
  pycocotools' mAP, AP50 and recall@0.5 (``task.evaluate``) and boxes per image vs the truth.
* **Wrong-image control** (docs/design.md §8.4,
  :func:`rlcv_lib.core.evaluate.wrong_image_control`): validation NLL per token kind of the
  ground-truth sequences, with the true images and with the images rolled by one within
  the batch. A model that reads the image loses much more on coordinates and classes with the
  wrong image than one that has only learned the token statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import pretrain as mle
from rlcv_lib.data import pipeline
from rlcv_lib.tasks.detection import metrics as dm
from rlcv_lib.tasks.detection import task as det

TOKEN_KINDS = ("coord", "class", "pad", "conf")
"""Token kinds of the wrong-image control (see :func:`token_kind_masks`)."""


def make_task(cfg: Any, class_counts: np.ndarray | None = None) -> det.DetectionTask:
    """The detection task of ``cfg`` (sections ``detection`` and ``world``); class weights from
    ``class_counts`` (default: the first 4096 training scenes)."""
    if class_counts is None:
        class_counts = det.scenes_class_counts(cfg.world)
    return det.DetectionTask.for_world(cfg.detection, cfg.world, class_counts)


def tokenize_batch(task: det.DetectionTask, batch: dict[str, np.ndarray], seed: int,
                   step: int) -> np.ndarray:
    """MLE targets int32 [B,L] of a collated batch (``boxes`` [B,M,4], ``labels`` [B,M] -1
    padded); example ``i`` gets a random box order from ``default_rng([seed, step, i])``."""
    out = []
    for i, (boxes, labels) in enumerate(zip(batch["boxes"], batch["labels"], strict=True)):
        keep = labels >= 0
        rng = np.random.default_rng([int(seed), int(step), i, 0xDE7])
        out.append(task.tokenize({"boxes": boxes[keep], "labels": labels[keep]}, rng))
    return np.stack(out).astype(np.int32)


def make_batch_fn(task: det.DetectionTask, loader: pipeline.Loader, seed: int):
    """``step -> {"image", "tokens", "boxes", "labels"}``, a pure function of (seed, step)."""

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        b = loader.batch(step)
        return {"image": b["image"], "tokens": tokenize_batch(task, b, seed, step),
                "boxes": b["boxes"], "labels": b["labels"]}

    return batch_fn


def make_evaluator(task: det.DetectionTask, val: ev.Split):
    """``fn(model, step) -> {mAP, AP50, recall50, boxes_per_image, gt_per_image, nll_*}``:
    COCO metrics in [0,1] of greedy decoding on the validation images (boxes scored by class
    likelihood, :data:`~rlcv_lib.tasks.detection.metrics.MLE_RULE`), and the teacher-forced NLL
    per token kind of their ground-truth sequences."""
    truth = truth_tokens(task, val.batch)
    masks = token_kind_masks(truth)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        preds, _ = dm.predict(model, task, val.batch["image"], dm.MLE_RULE)
        m = task.evaluate(preds, val.examples)
        out = {k: m[k] for k in ("mAP", "AP50", "recall50", "boxes_per_image", "gt_per_image")}
        nll = ev.masked_nll(model, task, val.batch["image"], truth, masks)
        return out | {f"nll_{k}": v for k, v in nll.items()}

    return evaluate


def truth_tokens(task: det.DetectionTask, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Ground-truth sequences int32 [B,L] in annotation order (deterministic)."""
    return np.stack([task.tokenize({"boxes": b[lab >= 0], "labels": lab[lab >= 0]})
                     for b, lab in zip(batch["boxes"], batch["labels"], strict=True)])


def token_kind_masks(tokens: np.ndarray) -> dict[str, np.ndarray]:
    """bool [B,L] per kind of target token: ``coord`` (slot positions 0–3 holding a coordinate),
    ``class`` (position 4), ``conf`` (position 5 of a box), ``pad`` (the one free PAD choice per
    sequence: position 0 of the first absent slot; later PADs are forced by the grammar)."""
    t = np.asarray(tokens)
    kind = np.arange(t.shape[-1]) % det.TOKENS_PER_BOX
    prev = np.concatenate([np.full(t.shape[:-1] + (1,), -1), t[..., :-1]], -1)
    is_pad = t == det.PAD
    return {"coord": (kind < 4) & ~is_pad, "class": (kind == 4) & ~is_pad,
            "pad": (kind == 0) & is_pad & (prev != det.PAD),
            "conf": (kind == det.CONF_KIND) & ~is_pad}


RECIPE = mle.Recipe(
    name="detection", make_task=lambda cfg, cache_dir: make_task(cfg),
    make_batch_fn=make_batch_fn, make_evaluator=make_evaluator, truth_tokens=truth_tokens,
    token_masks=lambda task, tokens: token_kind_masks(tokens))
"""Detection's part of :mod:`rlcv_lib.core.pretrain` and the wrong-image control."""
