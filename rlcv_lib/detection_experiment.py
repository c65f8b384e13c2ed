"""Detection MLE pretraining on the scenes world, its validation curve and the wrong-image control.

The glue between the scenes data (:mod:`rlcv_lib.data`), the pix2seq task
(:mod:`rlcv_lib.tasks.detection`), the core MLE step and the trainer::

    cfg = get_config("cpu", overrides={"train.num_steps": 6000})
    run = pretrain(cfg, "runs/det_mle")          # fit() with a validation curve in history
    control = wrong_image_control(run.model, run.task, run.val_batch)

* **Batches** (:func:`make_batch_fn`): step ``s`` is ``Loader.batch(s)`` plus ``tokens`` int32
  [B,L], each example tokenized with its boxes in a random order drawn from
  ``default_rng([seed, s, i])``, so the whole batch is a pure function of (seed, step). The batch
  keeps ``boxes``/``labels`` (what the detection reward reads) next to ``image`` and ``tokens``.
* **Evaluation** (:func:`make_evaluator`): greedy decoding under the grammar on a fixed set of
  validation images; each box scored by its class-token probability from a teacher-forced pass
  over the greedy tokens (pix2seq's rule: an MLE model's confidence tokens are untrained);
  pycocotools' mAP, AP50 and recall@0.5 (``task.evaluate``) and boxes per image vs the truth.
* **Wrong-image control** (DESIGN §8, :func:`wrong_image_control`): validation NLL per token kind
  of the ground-truth sequences, with the true images and with the images rolled by one within
  the batch. A model that reads the image loses much more on coordinates and classes with the
  wrong image than one that has only learned the token statistics.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np

from rlcv_lib import mle_experiment, sampling, steps
from rlcv_lib.data import pipeline
from rlcv_lib.tasks import detection as det

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


def predict(model, task: det.DetectionTask, images: np.ndarray, chunk: int = 256
            ) -> list[dict[str, np.ndarray]]:
    """Greedy predictions of ``images`` [B,H,W,3], boxes scored by class-token probability."""
    spec = sampling.DecodeSpec.for_task(task)
    greedy = steps.make_eval_fn(task)
    preds = []
    for lo in range(0, len(images), chunk):
        x = jnp.asarray(images[lo:lo + chunk])
        tokens = greedy(model, {"image": x})  # [b,L]
        lsm = np.asarray(sampling.teacher_forced_jit(model, x, tokens[:, None], spec)
                         .log_softmax[:, 0])  # [b,L,V]
        tokens = np.asarray(tokens)
        preds += [task.detokenize(t, l, score_rule="class")
                  for t, l in zip(tokens, lsm, strict=True)]
    return preds


def make_evaluator(task: det.DetectionTask, examples: list[dict[str, Any]],
                   val_batch: dict[str, np.ndarray]):
    """``fn(model, step) -> {mAP, AP50, recall50, boxes_per_image, gt_per_image, nll_*}``:
    COCO metrics in [0,1] of greedy decoding on the validation images, and the teacher-forced
    NLL per token kind of their ground-truth sequences."""

    def evaluate(model, step: int = 0) -> dict[str, float]:
        m = task.evaluate(predict(model, task, val_batch["image"]), examples)
        out = {k: m[k] for k in ("mAP", "AP50", "recall50", "boxes_per_image", "gt_per_image")}
        nll = kind_nll(model, task, val_batch["image"], truth_tokens(task, val_batch))
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


def kind_nll(model, task: det.DetectionTask, images: np.ndarray, tokens: np.ndarray,
             chunk: int = 256) -> dict[str, float]:
    """Mean teacher-forced NLL (nats per token) of ``tokens`` [B,L] given ``images``, per kind
    of :func:`token_kind_masks`, under the grammar's mask."""
    return mle_experiment.kind_nll(RECIPE, model, task, images, tokens, chunk)


RECIPE = mle_experiment.Recipe(
    name="detection", make_task=lambda cfg, cache_dir: make_task(cfg),
    make_batch_fn=make_batch_fn, make_evaluator=make_evaluator, truth_tokens=truth_tokens,
    token_masks=lambda task, tokens: token_kind_masks(tokens))
"""Detection's part of :mod:`rlcv_lib.mle_experiment`."""

validation_set = mle_experiment.validation_set
PretrainResult = mle_experiment.PretrainResult
pretrain = functools.partial(mle_experiment.pretrain, RECIPE)
restore_model = functools.partial(mle_experiment.restore_model, RECIPE)
wrong_image_control = functools.partial(mle_experiment.wrong_image_control, RECIPE)

if __name__ == "__main__":
    mle_experiment.main(RECIPE)
