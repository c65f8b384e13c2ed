"""Task-agnostic reward tuning on the scenes world (docs/design.md §8): REINFORCE from an MLE
model.

One call, the same for every task that has a :class:`~rlcv_lib.core.pretrain.Recipe`::

    pre = shipped.load_or_pretrain(RECIPE, cfg, "runs/det/mle")
    run = tune.tune(RECIPE, cfg, pre.model, pre.task, "runs/det/tune", eval_fn=evaluate)

* **Data**: the training split, streamed with the tuning batch size and a seed distinct from
  pretraining's (``seed_for(run.seed, "tune")``, :mod:`rlcv_lib.core.evaluate`), through the
  recipe's batch function (so the batch carries what the task's reward reads: boxes and labels,
  or reference captions).
* **Step**: :func:`rlcv_lib.core.steps.make_rl_step` with ``cfg.rl`` (leave-one-out baseline by
  default, ``rl.baseline="greedy"`` for self-critical training).
* **Optimiser and schedule**: ``cfg.tune`` (a :class:`~rlcv_lib.core.train.TrainConfig`; constant lr
  after warm-up, as the paper).
* **Curve**: ``eval_fn(model, step)`` every ``tune.eval_every`` updates and at step 0, recorded
  in the history with ``kind="eval"``; checkpoints and exact resume in ``workdir``.
* **Checkpoint choice** (:func:`tune_and_select`): every evaluation is offered to a
  :class:`~rlcv_lib.core.evaluate.BestState` on disk; after the run the best one on validation
  is loaded (step 0, the starting model, is a candidate), and the last update kept beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import optax
from flax import nnx

from rlcv_lib.core import evaluate, optim, steps, train
from rlcv_lib.core.history import History
from rlcv_lib.core.pretrain import Recipe
from rlcv_lib.data import pipeline, sources


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune` trained and measured."""

    model: Any
    history: History
    seconds: float


def tune(recipe: Recipe, cfg: Any, model: Any, task: Any, workdir: str | Path | None, *,
         eval_fn=None, train_size: int | None = None, cache_dir: str | None = None,
         progress: bool = True, desc: str | None = None,
         then: optax.GradientTransformation | None = None,
         mesh: jax.sharding.Mesh | None = None) -> TuneResult:
    """REINFORCE of ``model`` (updated in place) on ``task``'s reward with ``cfg.rl`` and
    ``cfg.tune``; resumes from ``workdir``'s checkpoints. ``train_size``: stream over only the
    first that many training scenes (None: the whole split). ``mesh``: data-parallel over its
    devices (:mod:`rlcv_lib.core.parallel`). ``then``: a transformation of the
    final updates (:func:`rlcv_lib.optim.make_optimizer`)."""
    tcfg = cfg.tune
    seed = evaluate.seed_for(cfg.run.seed, "tune")
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=seed,
                             max_boxes=cfg.world.max_objects)
    result = train.fit(model, optim.make_optimizer(model, tcfg, then=then),
                       steps.make_rl_step(task, cfg.rl),
                       recipe.make_batch_fn(task, loader, seed), seed=seed, workdir=workdir,
                       eval_fn=eval_fn, eval_at_start=eval_fn is not None, progress=progress,
                       desc=desc or f"{recipe.name} REINFORCE ({cfg.rl.baseline})",
                       mesh=mesh, **train.fit_kwargs(tcfg))
    return TuneResult(model=model, history=result.history, seconds=result.seconds)


@dataclasses.dataclass
class Tuned:
    """One tuning run and the checkpoint chosen on validation."""

    name: str
    model: Any
    """The chosen parameters (loaded after tuning)."""
    history: History
    seconds: float
    best_step: int
    best_value: float
    """The choice's metric at ``best_step``."""
    last: Any = None
    """The model at the run's last update (a diagnostic when it is not the chosen one)."""


def tune_and_select(recipe: Recipe, cfg: Any, model: Any, task: Any, workdir: str | Path, *,
                    name: str, select_on: str,
                    make_eval: Callable[[evaluate.BestState], Callable[..., dict[str, float]]],
                    **kwargs: Any) -> Tuned:
    """:func:`tune` of ``model`` (in place) in ``workdir`` (resumable) with the evaluation
    ``make_eval(keeper)`` (which offers each evaluation to ``keeper``), then the evaluation
    with the highest ``select_on`` loaded into ``model``. ``kwargs`` go to :func:`tune`."""
    workdir = Path(workdir)
    keeper = evaluate.BestState(select_on, workdir / "best", workdir / "history.jsonl")
    try:
        run = tune(recipe, cfg, model, task, workdir, eval_fn=make_eval(keeper), **kwargs)
        last = nnx.clone(model)
        best = keeper.restore(model)
    finally:
        keeper.close()
    return Tuned(name, model, run.history, run.seconds, best, keeper.value, last)
