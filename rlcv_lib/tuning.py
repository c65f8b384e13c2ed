"""Task-agnostic reward tuning on the scenes world (DESIGN §8): REINFORCE from an MLE model.

One call, the same for every task that has a :class:`~rlcv_lib.mle_experiment.Recipe`::

    pre = pretrained.load_or_pretrain(RECIPE, cfg, "runs/det/mle")
    run = tuning.tune(RECIPE, cfg, pre.model, pre.task, "runs/det/tune", eval_fn=evaluate)

* **Data**: the training split, streamed with the tuning batch size and a seed distinct from
  pretraining's (``cfg.run.seed + TUNE_SEED_OFFSET``), through the recipe's batch function (so
  the batch carries what the task's reward reads: boxes and labels, or reference captions).
* **Step**: :func:`rlcv_lib.steps.make_rl_step` with ``cfg.rl`` (leave-one-out baseline by
  default, ``rl.baseline="greedy"`` for self-critical training).
* **Optimiser and schedule**: ``cfg.tune`` (a :class:`~rlcv_lib.train.TrainConfig`; constant lr
  after warm-up, as the paper).
* **Curve**: ``eval_fn(model, step)`` every ``tune.eval_every`` updates and at step 0, recorded
  in the history with ``kind="eval"``; checkpoints and exact resume in ``workdir``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optax

from rlcv_lib import optim, steps, train
from rlcv_lib.data import pipeline, sources
from rlcv_lib.history import History
from rlcv_lib.mle_experiment import Recipe

TUNE_SEED_OFFSET = 1_000
"""Tuning's data order and sampling keys use ``run.seed + TUNE_SEED_OFFSET`` (MLE's use
``run.seed``), so tuning never replays pretraining's batches in the same order."""


def with_task_defaults(cfg: Any, defaults: Mapping[str, Mapping[str, Any]],
                       overrides: Mapping[str, Any] | None = None) -> Any:
    """``cfg`` with a task's own values of the shared tuning sections applied.

    The ``tune`` and ``rl`` sections are shared by every task; where one task needs other values
    at a preset (detection tunes at a lower learning rate than captioning on the cpu preset),
    its module declares them as ``defaults = {preset: {"section.field": value}}``. Keys the user
    overrode (``overrides``, dotted names as given to the notebook) win."""
    user = set(overrides or {})
    out = cfg
    for key, value in defaults.get(cfg.preset, {}).items():
        if key in user:
            continue
        section, field = key.split(".", 1)
        out = out.replace(**{section: dataclasses.replace(getattr(out, section),
                                                          **{field: value})})
    out.rl.validate()
    return out


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune` trained and measured."""

    model: Any
    history: History
    seconds: float


def tune(recipe: Recipe, cfg: Any, model: Any, task: Any, workdir: str | Path | None, *,
         eval_fn=None, train_size: int | None = None, cache_dir: str | None = None,
         progress: bool = True, desc: str | None = None,
         then: optax.GradientTransformation | None = None) -> TuneResult:
    """REINFORCE of ``model`` (updated in place) on ``task``'s reward with ``cfg.rl`` and
    ``cfg.tune``; resumes from ``workdir``'s checkpoints. ``train_size``: stream over only the
    first that many training scenes (None: the whole split). ``then``: a transformation of the
    final updates (:func:`rlcv_lib.optim.make_optimizer`)."""
    tcfg = cfg.tune
    seed = cfg.run.seed + TUNE_SEED_OFFSET
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=seed,
                             max_boxes=cfg.world.max_objects)
    result = train.fit(model, optim.make_optimizer(model, tcfg, then=then),
                       steps.make_rl_step(task, cfg.rl),
                       recipe.make_batch_fn(task, loader, seed), seed=seed, workdir=workdir,
                       eval_fn=eval_fn, eval_at_start=eval_fn is not None, progress=progress,
                       desc=desc or f"{recipe.name} REINFORCE ({cfg.rl.baseline})",
                       **train.fit_kwargs(tcfg))
    return TuneResult(model=model, history=result.history, seconds=result.seconds)
