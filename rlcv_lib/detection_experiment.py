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

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlcv_lib import checkpoint, optim, sampling, steps, train
from rlcv_lib.data import pipeline, sources
from rlcv_lib.history import History
from rlcv_lib.models import build_model
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


def validation_set(cfg: Any, num_examples: int, cache_dir: str | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The first ``num_examples`` validation scenes as examples (for pycocotools) and as one
    collated batch."""
    src = sources.open_source("scenes", "validation", world=cfg.world, cache_dir=cache_dir,
                              size=num_examples)
    examples = [src[i] for i in range(len(src))]
    return examples, pipeline.collate(examples, max_boxes=cfg.world.max_objects)


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
    """Mean teacher-forced NLL (nats per token) of ``tokens`` [B,L] given ``images`` [B,...],
    per kind of :func:`token_kind_masks`, under the grammar's mask."""
    spec = sampling.DecodeSpec.for_task(task)
    lp = np.concatenate([
        np.asarray(sampling.teacher_forced_jit(
            model, jnp.asarray(images[lo:lo + chunk]),
            jnp.asarray(tokens[lo:lo + chunk])[:, None], spec).logprobs[:, 0])
        for lo in range(0, len(tokens), chunk)])  # [B,L]
    return {k: float(-lp[m].mean()) if m.any() else float("nan")
            for k, m in token_kind_masks(tokens).items()}


def wrong_image_control(model, task: det.DetectionTask, batch: dict[str, np.ndarray]
                        ) -> dict[str, dict[str, float]]:
    """NLL per token kind of ``batch``'s ground truth with its true images and with the images
    rolled by one (each sequence paired with another scene): ``{"true": {...}, "wrong": {...},
    "gap": wrong - true}``. A gap near 0 means the model does not use the image for that kind."""
    if len(batch["image"]) < 2:
        raise ValueError(f"the wrong-image control needs >= 2 images, got {len(batch['image'])}")
    tokens = truth_tokens(task, batch)
    true = kind_nll(model, task, batch["image"], tokens)
    wrong = kind_nll(model, task, np.roll(batch["image"], 1, axis=0), tokens)
    return {"true": true, "wrong": wrong, "gap": {k: wrong[k] - true[k] for k in true}}


@dataclasses.dataclass
class PretrainResult:
    """What :func:`pretrain` trained and measured."""

    model: Any
    task: det.DetectionTask
    history: History
    val_batch: dict[str, np.ndarray]
    seconds: float


def pretrain(cfg: Any, workdir: str | Path | None, *, eval_examples: int = 256,
             train_size: int | None = None, cache_dir: str | None = None,
             progress: bool = True) -> PretrainResult:
    """MLE pretraining of ``cfg.model`` on ``cfg.world`` with ``cfg.train`` (resumes from
    ``workdir``'s checkpoints); validation metrics (:func:`make_evaluator` on the first
    ``eval_examples`` validation scenes) every ``train.eval_every`` updates and at step 0.
    ``train_size``: stream over only the first that many training scenes (None: the split)."""
    task = make_task(cfg)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    tcfg = cfg.train
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=cfg.run.seed,
                             max_boxes=cfg.world.max_objects)
    examples, val_batch = validation_set(cfg, eval_examples, cache_dir)
    result = train.fit(model, optim.make_optimizer(model, tcfg), steps.make_mle_step(task),
                       make_batch_fn(task, loader, cfg.run.seed), seed=cfg.run.seed,
                       workdir=workdir, eval_fn=make_evaluator(task, examples, val_batch),
                       eval_at_start=True, progress=progress, desc="detection MLE",
                       **train.fit_kwargs(tcfg))
    return PretrainResult(model=model, task=task, history=result.history, val_batch=val_batch,
                          seconds=result.seconds)


def restore_model(cfg: Any, workdir: str | Path, step: int | None = None):
    """``(model, task, step)``: the model of :func:`pretrain`'s checkpoint ``step`` (default the
    latest) in ``workdir``."""
    task = make_task(cfg)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    step = checkpoint.restore(Path(workdir) / "checkpoints", model, step=step)
    return model, task, step


def _main() -> None:
    """``python -m rlcv_lib.detection_experiment PRESET WORKDIR [key=value ...]``: pretrain and
    print the validation curve and the wrong-image control. With ``control`` before PRESET: only
    the control (and one evaluation) of WORKDIR's latest checkpoint."""
    import json
    import sys

    from rlcv_lib.config import get_config

    args = sys.argv[1:]
    control_only = args[0] == "control"
    preset, workdir, *kv = args[1:] if control_only else args
    overrides = dict(a.split("=", 1) for a in kv)
    train_size = overrides.pop("train_size", None)
    cfg = get_config(preset, overrides=overrides)
    if control_only:
        model, task, step = restore_model(cfg, workdir)
        examples, val_batch = validation_set(cfg, 256, str(Path(workdir).parent / "scenes_cache"))
        print(json.dumps({"step": step, **make_evaluator(task, examples, val_batch)(model)}))
        print(json.dumps({"wrong_image_control": wrong_image_control(model, task, val_batch)}))
        return
    run = pretrain(cfg, workdir, train_size=None if train_size is None else int(train_size),
                   cache_dir=str(Path(workdir).parent / "scenes_cache"), progress=False)
    for rec in run.history.records():
        print(json.dumps(rec), flush=True)
    control = wrong_image_control(run.model, run.task, run.val_batch)
    print(json.dumps({"wrong_image_control": control}), flush=True)
    jax.effects_barrier()


if __name__ == "__main__":
    _main()
