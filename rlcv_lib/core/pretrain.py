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

from rlcv_lib.core import checkpoint, encoder_init, evaluate, optim, steps, train
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
    truth_tokens: Callable[[Any, dict], np.ndarray] | None = None
    """``(task, batch) -> int32 [B,L]``: deterministic ground-truth sequences (None: the model
    emits no tokens, e.g. UViM's stage I, and has no wrong-image control)."""
    token_masks: Callable[[Any, np.ndarray], dict[str, np.ndarray]] | None = None
    """``(task, tokens [B,L]) -> {kind: bool [B,L]}``: the token kinds of the control."""
    build: Callable[[Any, Any], Any] | None = None
    """``(cfg, task) -> model`` (None: the encoder-decoder of ``cfg.model`` for the task, seeded
    by ``cfg.run.seed``); UViM's stage I brings its VQ-VAE."""
    make_step: Callable[[Any, Any], Any] | None = None
    """``(cfg, task) -> step`` with the trainer's contract (None: the task's MLE step)."""
    train_section: str = "train"
    """The config section holding the :class:`~rlcv_lib.core.train.TrainConfig` it trains with."""
    input_images: Callable[[Any, dict], np.ndarray] | None = None
    """``(task, scenes batch) -> float [B,H,W,3]``: what the model reads of a scenes batch
    (None: its ``image``; UViM colorization's stage II reads the grey image)."""

    def model(self, cfg: Any, task: Any) -> Any:
        """A freshly initialised model of this recipe."""
        if self.build is not None:
            return self.build(cfg, task)
        return build_model(cfg.model, task, seed=cfg.run.seed)

    def step(self, cfg: Any, task: Any) -> Any:
        """The training step of this recipe."""
        return self.make_step(cfg, task) if self.make_step else steps.make_mle_step(task)

    def images(self, task: Any, batch: dict) -> np.ndarray:
        """The model's input images of a collated scenes ``batch``."""
        return batch["image"] if self.input_images is None else self.input_images(task, batch)

    def train_config(self, cfg: Any) -> train.TrainConfig:
        """The training settings of this recipe in ``cfg``."""
        return getattr(cfg, self.train_section)


@dataclasses.dataclass
class PretrainResult:
    """What :func:`pretrain` trained and measured."""

    model: Any
    task: Any
    history: History
    val: evaluate.Split
    """The validation scenes of the curve (and of the wrong-image control)."""
    seconds: float
    encoder_start: dict[str, Any] | None = None
    """:func:`~rlcv_lib.core.encoder_init.provenance` of the encoder the run started from
    (None: random initialisation)."""


def pretrain(recipe: Recipe, cfg: Any, workdir: str | Path | None, *, eval_examples: int = 256,
             train_size: int | None = None, cache_dir: str | None = None,
             progress: bool = True, mesh: jax.sharding.Mesh | None = None) -> PretrainResult:
    """MLE pretraining of the recipe's model on ``cfg.world`` with its training section
    (``cfg.train`` unless the recipe names another; resumes from
    ``workdir``'s checkpoints); validation metrics (the recipe's evaluator on the first
    ``eval_examples`` validation scenes) every ``train.eval_every`` updates and at step 0.
    ``train_size``: stream over only the first that many training scenes (None: the split).
    ``mesh``: data-parallel over its devices (:mod:`rlcv_lib.core.parallel`). With
    ``model.encoder_init`` set, the encoder starts from that checkpoint
    (:mod:`rlcv_lib.core.encoder_init`)."""
    task = recipe.make_task(cfg, cache_dir)
    model = recipe.model(cfg, task)
    start = encoder_init.start_run(model, cfg, workdir)  # resumed: the checkpoint replaces it
    tcfg = recipe.train_config(cfg)
    seed = evaluate.seed_for(cfg.run.seed, "pretrain")
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=seed,
                             max_boxes=cfg.world.max_objects)
    val = evaluate.load_split(cfg, "validation", eval_examples, cache_dir)
    result = train.fit(model, optim.make_optimizer(model, tcfg), recipe.step(cfg, task),
                       recipe.make_batch_fn(task, loader, seed), seed=seed,
                       workdir=workdir,
                       eval_fn=recipe.make_evaluator(task, val),
                       eval_at_start=True, progress=progress, desc=f"{recipe.name} MLE", mesh=mesh,
                       **train.fit_kwargs(tcfg))
    return PretrainResult(model=model, task=task, history=result.history, val=val,
                          seconds=result.seconds, encoder_start=start)


def restore_model(recipe: Recipe, cfg: Any, workdir: str | Path, step: int | None = None,
                  cache_dir: str | None = None):
    """``(model, task, step)``: the model of :func:`pretrain`'s checkpoint ``step`` (default the
    latest) in ``workdir``."""
    task = recipe.make_task(cfg, cache_dir)
    model = recipe.model(cfg, task)
    step = checkpoint.restore(Path(workdir) / "checkpoints", model, step=step)
    return model, task, step
