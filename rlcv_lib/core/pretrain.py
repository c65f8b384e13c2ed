"""Task-agnostic MLE pretraining on the scenes world, with its validation curve
(docs/design.md §8). A task's ``pretrain`` module supplies a :class:`Recipe`; the data stream,
the fit loop and its checkpoints are here, the wrong-image control and the per-kind NLLs in
:mod:`rlcv_lib.core.evaluate`, the command line in :mod:`rlcv_lib.cli`.

See :mod:`rlcv_lib.tasks.detection.pretrain` and :mod:`rlcv_lib.tasks.captioning.pretrain`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rlcv_lib.core import checkpoint, evaluate, optim, steps, train
from rlcv_lib.core.history import History
from rlcv_lib.data import pipeline, sources
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
    make_evaluator: Callable[[Any, Any], Callable[..., dict[str, float]]]
    """``(task, val: evaluate.Split) -> fn(model, step=0) -> metrics``."""
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
    val: evaluate.Split
    """The validation scenes of the curve (and of the wrong-image control)."""
    seconds: float


def pretrain(recipe: Recipe, cfg: Any, workdir: str | Path | None, *, eval_examples: int = 256,
             train_size: int | None = None, cache_dir: str | None = None,
             progress: bool = True, mesh: jax.sharding.Mesh | None = None) -> PretrainResult:
    """MLE pretraining of ``cfg.model`` on ``cfg.world`` with ``cfg.train`` (resumes from
    ``workdir``'s checkpoints); validation metrics (the recipe's evaluator on the first
    ``eval_examples`` validation scenes) every ``train.eval_every`` updates and at step 0.
    ``train_size``: stream over only the first that many training scenes (None: the split).
    ``mesh``: data-parallel over its devices (:mod:`rlcv_lib.core.parallel`)."""
    task = recipe.make_task(cfg, cache_dir)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    tcfg = cfg.train
    seed = evaluate.seed_for(cfg.run.seed, "pretrain")
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=seed,
                             max_boxes=cfg.world.max_objects)
    val = evaluate.load_split(cfg, "validation", eval_examples, cache_dir)
    result = train.fit(model, optim.make_optimizer(model, tcfg), steps.make_mle_step(task),
                       recipe.make_batch_fn(task, loader, seed), seed=seed,
                       workdir=workdir,
                       eval_fn=recipe.make_evaluator(task, val),
                       eval_at_start=True, progress=progress, desc=f"{recipe.name} MLE", mesh=mesh,
                       **train.fit_kwargs(tcfg))
    return PretrainResult(model=model, task=task, history=result.history, val=val,
                          seconds=result.seconds)


def restore_model(recipe: Recipe, cfg: Any, workdir: str | Path, step: int | None = None,
                  cache_dir: str | None = None):
    """``(model, task, step)``: the model of :func:`pretrain`'s checkpoint ``step`` (default the
    latest) in ``workdir``."""
    task = recipe.make_task(cfg, cache_dir)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    step = checkpoint.restore(Path(workdir) / "checkpoints", model, step=step)
    return model, task, step
