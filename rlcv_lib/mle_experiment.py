"""Task-agnostic MLE pretraining on the scenes world, with its validation curve and the
wrong-image control (DESIGN §8). A task module supplies a :class:`Recipe`; everything else
(data streams, the fit loop, checkpoints, per-kind NLLs, the control, the command line) is here.

See :mod:`rlcv_lib.detection_experiment` and :mod:`rlcv_lib.captioning_experiment`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlcv_lib import checkpoint, optim, sampling, steps, train
from rlcv_lib.data import pipeline, scenes, sources
from rlcv_lib.history import History
from rlcv_lib.models import build_model


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a task contributes to MLE pretraining and its diagnostics."""

    name: str
    """Shown in progress bars, e.g. ``"detection"``."""
    make_task: Callable[[Any, str | None], Any]
    """``(cfg, cache_dir) -> task``."""
    make_batch_fn: Callable[[Any, pipeline.Loader, int], Callable[[int], dict]]
    """``(task, loader, seed) -> (step -> batch)``, a pure function of (seed, step)."""
    make_evaluator: Callable[[Any, list, dict], Callable[..., dict[str, float]]]
    """``(task, examples, val_batch) -> fn(model, step=0) -> metrics``."""
    truth_tokens: Callable[[Any, dict], np.ndarray]
    """``(task, batch) -> int32 [B,L]``: deterministic ground-truth sequences."""
    token_masks: Callable[[Any, np.ndarray], dict[str, np.ndarray]]
    """``(task, tokens [B,L]) -> {kind: bool [B,L]}``: the token kinds of the control."""


@dataclasses.dataclass
class PretrainResult:
    """What :func:`pretrain` trained and measured."""

    model: Any
    task: Any
    history: History
    val_batch: dict[str, np.ndarray]
    seconds: float


def split_set(cfg: Any, split: str, num_examples: int, cache_dir: str | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The first ``min(num_examples, split size)`` scenes of ``split`` ("validation" for
    choices, "test" for reported numbers) as examples (for the reference metrics) and as one
    collated batch."""
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be >= 1")
    size = min(int(num_examples), scenes.split_size(cfg.world, split))
    src = sources.open_source("scenes", split, world=cfg.world, cache_dir=cache_dir, size=size)
    examples = [src[i] for i in range(len(src))]
    return examples, pipeline.collate(examples, max_boxes=cfg.world.max_objects)


def validation_set(cfg: Any, num_examples: int, cache_dir: str | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """:func:`split_set` of the validation split."""
    return split_set(cfg, "validation", num_examples, cache_dir)


def masked_nll(model, task: Any, images: np.ndarray, tokens: np.ndarray,
               masks: dict[str, np.ndarray], chunk: int = 256) -> dict[str, float]:
    """Mean teacher-forced NLL (nats per token) of ``tokens`` [B,L] given ``images`` within each
    mask of ``masks`` (under the task's allowed-token rule); NaN for an empty mask."""
    spec = sampling.DecodeSpec.for_task(task)
    lp = np.concatenate([
        np.asarray(sampling.teacher_forced_jit(
            model, jnp.asarray(images[lo:lo + chunk]),
            jnp.asarray(tokens[lo:lo + chunk])[:, None], spec).logprobs[:, 0])
        for lo in range(0, len(tokens), chunk)])  # [B,L]
    return {k: float(-lp[m].mean()) if m.any() else float("nan") for k, m in masks.items()}


def kind_nll(recipe: Recipe, model, task: Any, images: np.ndarray, tokens: np.ndarray,
             chunk: int = 256) -> dict[str, float]:
    """:func:`masked_nll` over the recipe's token kinds."""
    return masked_nll(model, task, images, tokens, recipe.token_masks(task, tokens), chunk)


def wrong_image_control(recipe: Recipe, model, task: Any, batch: dict[str, np.ndarray]
                        ) -> dict[str, dict[str, float]]:
    """NLL per token kind of ``batch``'s ground truth with its true images and with the images
    rolled by one (each sequence paired with another scene): ``{"true": {...}, "wrong": {...},
    "gap": wrong - true}``. A gap near 0 means the model does not use the image for that kind."""
    if len(batch["image"]) < 2:
        raise ValueError(f"the wrong-image control needs >= 2 images, got {len(batch['image'])}")
    tokens = recipe.truth_tokens(task, batch)
    true = kind_nll(recipe, model, task, batch["image"], tokens)
    wrong = kind_nll(recipe, model, task, np.roll(batch["image"], 1, axis=0), tokens)
    return {"true": true, "wrong": wrong, "gap": {k: wrong[k] - true[k] for k in true}}


def pretrain(recipe: Recipe, cfg: Any, workdir: str | Path | None, *, eval_examples: int = 256,
             train_size: int | None = None, cache_dir: str | None = None,
             progress: bool = True) -> PretrainResult:
    """MLE pretraining of ``cfg.model`` on ``cfg.world`` with ``cfg.train`` (resumes from
    ``workdir``'s checkpoints); validation metrics (the recipe's evaluator on the first
    ``eval_examples`` validation scenes) every ``train.eval_every`` updates and at step 0.
    ``train_size``: stream over only the first that many training scenes (None: the split)."""
    task = recipe.make_task(cfg, cache_dir)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    tcfg = cfg.train
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=cfg.run.seed,
                             max_boxes=cfg.world.max_objects)
    examples, val_batch = validation_set(cfg, eval_examples, cache_dir)
    result = train.fit(model, optim.make_optimizer(model, tcfg), steps.make_mle_step(task),
                       recipe.make_batch_fn(task, loader, cfg.run.seed), seed=cfg.run.seed,
                       workdir=workdir,
                       eval_fn=recipe.make_evaluator(task, examples, val_batch),
                       eval_at_start=True, progress=progress, desc=f"{recipe.name} MLE",
                       **train.fit_kwargs(tcfg))
    return PretrainResult(model=model, task=task, history=result.history, val_batch=val_batch,
                          seconds=result.seconds)


def restore_model(recipe: Recipe, cfg: Any, workdir: str | Path, step: int | None = None,
                  cache_dir: str | None = None):
    """``(model, task, step)``: the model of :func:`pretrain`'s checkpoint ``step`` (default the
    latest) in ``workdir``."""
    task = recipe.make_task(cfg, cache_dir)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    step = checkpoint.restore(Path(workdir) / "checkpoints", model, step=step)
    return model, task, step


def main(recipe: Recipe, argv: list[str] | None = None) -> None:
    """``python -m rlcv_lib.<task>_experiment [control] PRESET WORKDIR [key=value ...]``: pretrain
    and print the validation curve and the wrong-image control as JSON lines; with ``control``,
    only one evaluation and the control of WORKDIR's latest checkpoint. ``train_size=N`` streams
    over the first N training scenes; scenes are cached beside WORKDIR."""
    from rlcv_lib.config import get_config

    args = sys.argv[1:] if argv is None else argv
    control_only = bool(args) and args[0] == "control"
    if len(args) < 2 + control_only:
        raise SystemExit(f"usage: python -m rlcv_lib.{recipe.name}_experiment [control] PRESET "
                         "WORKDIR [section.field=value ...] [train_size=N]")
    preset, workdir, *kv = args[1:] if control_only else args
    overrides = dict(a.split("=", 1) for a in kv)
    train_size = overrides.pop("train_size", None)
    cfg = get_config(preset, overrides=overrides)
    cache_dir = str(Path(workdir).parent / "scenes_cache")
    if control_only:
        model, task, step = restore_model(recipe, cfg, workdir, cache_dir=cache_dir)
        examples, val_batch = validation_set(cfg, 256, cache_dir)
        print(json.dumps({"step": step,
                          **recipe.make_evaluator(task, examples, val_batch)(model)}))
        control = wrong_image_control(recipe, model, task, val_batch)
        print(json.dumps({"wrong_image_control": control}))
        return
    run = pretrain(recipe, cfg, workdir, cache_dir=cache_dir, progress=False,
                   train_size=None if train_size is None else int(train_size))
    for rec in run.history.records():
        print(json.dumps(rec), flush=True)
    control = wrong_image_control(recipe, run.model, run.task, run.val_batch)
    print(json.dumps({"wrong_image_control": control}), flush=True)
    jax.effects_barrier()
