"""The training loop shared by MLE and reward tuning.

:func:`fit` calls a step function ``step_fn(model, optimizer, batch, rng) -> metrics`` once per
step. It knows nothing of the task or of the loss: an MLE step and a REINFORCE step (which may
run a host-side reward between jitted parts) plug in the same way. Step ``s`` (1-based: the
``s``-th update) uses ``batch_fn(s - 1)`` and ``rng = fold_in(key(seed), s - 1)``, so data order
and randomness are pure functions of (seed, step) and a run resumed from the checkpoint of step
``k`` continues exactly as the uninterrupted run would have.

A step function may also offer ``step_fn.functional(model, optimizer) ->
steps.FunctionalStep(state, step, sync)``, the same update as one pure jitted step over the flat
state of ``(model, optimizer)`` that donates that state (both core steps do;
:mod:`rlcv_lib.core.steps`). ``fit`` then splits the objects once, keeps the state between
steps (saving ``nnx.jit``'s graph traversal on every step), and writes it back into the live
objects before every evaluation, checkpoint and return (``sync``): ``eval_fn`` always reads the
model as trained so far. A plain in-place step function runs as it is.

The loop never waits for the device on an ordinary step. The per-step metric values stay on
the device until a log, evaluation or checkpoint step, where they are fetched together: their
mean over the interval becomes one history record, and a NaN/inf loss among them stops training
with :class:`NonFiniteLossError`. Checkpoints are written only at steps whose losses were just
checked (and whose parameters are finite), so the last checkpoint is always a good one.

Typical use (an MLE phase whose checkpoint is cached under a key of config, world and code)::

    cfg = get_config("cpu")
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    optimizer = optim.make_optimizer(model, cfg.train)
    workdir = checkpoint.cache_dir("cache", "mle", cfg, WORLD_VERSION, sections=(...))
    result = fit(model, optimizer, steps.make_mle_step(task),
                 lambda i: task_batch(seed, i, cfg.train.micro_batch_size),
                 seed=cfg.run.seed, workdir=workdir, eval_fn=evaluate,
                 progress=cfg.run.progress, **fit_kwargs(cfg.train))

A second call with the same workdir finds the finished checkpoint and trains zero steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from rlcv_lib.core import checkpoint, parallel
from rlcv_lib.core.history import History

StepFn = Callable[[nnx.Module, nnx.Optimizer, Any, jax.Array], Mapping[str, Any]]
BatchFn = Callable[[int], Any]
EvalFn = Callable[[nnx.Module, int], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings of one training phase (MLE pretraining by default)."""

    optimizer: Literal["adafactor", "adamw"] = "adafactor"
    """'adafactor' (big_vision's variant, the authors' choice) or 'adamw'."""
    lr: float = 1e-3
    """Peak learning rate (multiplied by the schedule)."""
    warmup_steps: int = 100
    """Linear warmup from 0 over this many optimizer updates."""
    schedule: Literal["constant", "cosine"] = "cosine"
    """After warmup: 'constant' or 'cosine' decay to 0 at num_steps."""
    weight_decay: float = 0.0
    """Decoupled decay of kernels per update, times the schedule but NOT times lr (big_vision)."""
    grad_clip_norm: float = 1.0
    """Clip gradients to this global norm before the optimizer; 0 disables."""
    beta2_cap: float = 0.999
    """Cap of Adafactor's second-moment decay; Adam's b2 for 'adamw'."""
    batch_size: int = 32
    """Global batch per optimizer update: examples (MLE) or images (reward tuning, x N samples)."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per update (optax.MultiSteps); each holds batch_size / this."""
    num_steps: int = 2000
    """Optimizer updates."""
    log_every: int = 50
    """Updates per history record (the metrics' mean over the interval) and NaN check."""
    eval_every: int = 500
    """Updates between evaluations (0: only at the end)."""
    ckpt_every: int = 500
    """Updates between checkpoints (0: only at the end)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept on disk."""

    @property
    def micro_batch_size(self) -> int:
        """Examples per call of the step function."""
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"train.batch_size {self.batch_size} is not divisible by "
                             f"train.grad_accum_steps {self.grad_accum_steps}")
        return self.batch_size // self.grad_accum_steps


# MLE pretraining. smoke: plumbing only. cpu: a few thousand updates of the small cpu models.
# gpu and paper are our choices (the paper gives no MLE optimisation settings; it starts from
# pretrained models).
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "smoke": TrainConfig(lr=1e-3, warmup_steps=2, batch_size=8, num_steps=8, log_every=2,
                         eval_every=4, ckpt_every=4),
    "cpu": TrainConfig(lr=1e-3, warmup_steps=100, schedule="constant", batch_size=32,
                       num_steps=6000, log_every=50, eval_every=250, ckpt_every=250),
    "gpu": TrainConfig(lr=1e-3, warmup_steps=500, batch_size=64, num_steps=25000,
                       log_every=100, eval_every=2500, ckpt_every=2500),
    "paper": TrainConfig(lr=1e-3, warmup_steps=4000, weight_decay=1e-4, batch_size=128,
                         num_steps=100000, log_every=100, eval_every=5000, ckpt_every=5000),
}

# Reward tuning with the same dataclass; paper: Adafactor, constant lr 1e-6 after 4k warmup,
# batch 128, 30k steps (the paper's settings table). cpu: the detection spike's lr 1e-4.
TUNE_PRESETS: dict[str, TrainConfig] = {
    "smoke": TrainConfig(lr=1e-4, warmup_steps=1, schedule="constant", batch_size=4,
                         num_steps=6, log_every=2, eval_every=3, ckpt_every=3),
    "cpu": TrainConfig(lr=1e-4, warmup_steps=20, schedule="constant", batch_size=8,
                       num_steps=400, log_every=10, eval_every=50, ckpt_every=50),
    "gpu": TrainConfig(lr=1e-5, warmup_steps=200, schedule="constant", batch_size=32,
                       num_steps=3000, log_every=20, eval_every=250, ckpt_every=250),
    "paper": TrainConfig(lr=1e-6, warmup_steps=4000, schedule="constant", batch_size=128,
                         num_steps=30000, log_every=100, eval_every=1000, ckpt_every=1000),
}

# UViM stage I (the VQ-VAE) with the same dataclass; paper: the released colorization stage I
# (docs/design.md §10.2: Adafactor, beta2 cap 0.95, lr 4e-4, weight decay 4e-5, cosine, 4k
# warm-up, clip 1.0, batch 1024 for 100 epochs of ImageNet). cpu: a starting point to measure.
STAGE1_PRESETS: dict[str, TrainConfig] = {
    "smoke": TrainConfig(lr=1e-3, warmup_steps=2, batch_size=8, num_steps=8, log_every=2,
                         eval_every=4, ckpt_every=4),
    "cpu": TrainConfig(lr=1e-3, warmup_steps=200, schedule="constant", batch_size=32,
                       num_steps=6000, log_every=50, eval_every=500, ckpt_every=250),
    "gpu": TrainConfig(lr=1e-3, warmup_steps=500, batch_size=128, num_steps=20000,
                       log_every=100, eval_every=2500, ckpt_every=2500),
    "paper": TrainConfig(lr=4e-4, warmup_steps=4000, weight_decay=4e-5, beta2_cap=0.95,
                         batch_size=1024, num_steps=125000, log_every=100, eval_every=2500,
                         ckpt_every=1000),
}


def fit_kwargs(cfg: TrainConfig) -> dict[str, int]:
    """The :func:`fit` arguments of a :class:`TrainConfig`, in calls of the step function.

    With gradient accumulation, one update is ``grad_accum_steps`` calls, so step counts and
    intervals (given in updates by the config) are multiplied by it.
    """
    k = cfg.grad_accum_steps
    _ = cfg.micro_batch_size  # validates divisibility
    return {"num_steps": cfg.num_steps * k, "log_every": cfg.log_every * k,
            "eval_every": cfg.eval_every * k, "ckpt_every": cfg.ckpt_every * k,
            "keep_checkpoints": cfg.keep_checkpoints, "steps_per_update": k}


def _in_place(step_fn: StepFn, model, optimizer):
    """A plain in-place ``step_fn`` in the pure form :func:`fit` runs: the live objects are its
    state (nothing to copy or write back)."""
    from rlcv_lib.core.steps import FunctionalStep

    return FunctionalStep(None, lambda state, batch, rng: (state, step_fn(model, optimizer,
                                                                          batch, rng)),
                          lambda state: state)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf (or the parameters did); training stopped."""

    def __init__(self, message: str, *, step: int, window: tuple[int, int],
                 last_good_step: int | None, workdir: Path | None):
        super().__init__(message)
        self.step, self.window = step, window
        self.last_good_step, self.workdir = last_good_step, workdir


@dataclasses.dataclass
class FitResult:
    step: int
    """Steps completed (== num_steps on a normal return)."""
    start_step: int
    """The step training started from (> 0 when resumed from a checkpoint)."""
    seconds: float
    """Wall time of this call."""
    history: History
    """All records, including those of earlier (resumed) calls on the same workdir."""
    last_metrics: dict[str, float]
    """The last train record's metric means."""
    timed_seconds: float | None = None
    """With a ``time_budget``: the seconds of steps counted against it (the first not)."""


def fit(model: nnx.Module, optimizer: nnx.Optimizer, step_fn: StepFn, batch_fn: BatchFn, *,
        num_steps: int, seed: int = 0, workdir: str | os.PathLike | None = None,
        log_every: int = 50, eval_fn: EvalFn | None = None, eval_every: int = 0,
        eval_at_start: bool = False, ckpt_every: int = 0, keep_checkpoints: int = 2,
        resume: bool = True, mesh: jax.sharding.Mesh | None = None, progress: bool = True,
        desc: str = "train", steps_per_update: int = 1,
        time_budget: float | None = None) -> FitResult:
    """Trains ``model`` in place for ``num_steps`` calls of ``step_fn``; see the module docstring.

    Args:
      model, optimizer: live NNX objects, updated in place by ``step_fn``.
      step_fn: ``(model, optimizer, batch, rng) -> {"loss": scalar, ...}``; any other scalar
        metrics (reward mean/std, advantage stats, entropy, lengths...) are logged too.
      batch_fn: ``step_index -> batch`` (0-based), a pure function of the index.
      num_steps: total steps of the run (a resumed run does the remaining ones).
      seed: the per-step rng is ``fold_in(jax.random.key(seed), step_index)``.
      workdir: where ``checkpoints/`` and ``history.jsonl`` go; None: no files, no resume.
      log_every: steps per history record and NaN check (the last step is always logged).
      eval_fn: ``(model, step) -> {name: scalar}`` (e.g. validation metric, KL to the initial
        model), run every ``eval_every`` steps (0: only at the end) and recorded with
        ``kind="eval"``; also at step 0 if ``eval_at_start`` (and not resuming).
      ckpt_every: steps between checkpoints (0: only at the end); without a ``workdir``
        there are no checkpoints.
      resume: continue from the latest checkpoint in ``workdir`` if there is one (False:
        refuse a workdir that holds checkpoints).
      mesh: data-parallel mesh (:mod:`rlcv_lib.core.parallel`): state is replicated over it and
        each batch's array leaves are sharded on their leading axis. None: leave placement
        to JAX (one device).
      steps_per_update: calls per optimizer update (gradient accumulation); records then also
        carry ``update = step // steps_per_update``.
      time_budget: stop after the step at which the wall time of this call's steps, the first
        (it compiles) not counted, reaches this many seconds (each step then waits for the
        device, so the time is the updates'). None: run ``num_steps``.

    Returns:
      a :class:`FitResult` (``step`` is ``num_steps``, or the last step within
      ``time_budget``). Raises :class:`NonFiniteLossError` on a NaN/inf loss, after
      pending checkpoint writes have finished; the last checkpoint in ``workdir`` is good.
    """
    if num_steps < 0 or log_every < 1:
        raise ValueError(f"need num_steps >= 0 and log_every >= 1, got {num_steps}, {log_every}")
    workdir = None if workdir is None else Path(workdir)
    t0 = time.perf_counter()
    ckpt = (checkpoint.Checkpointer(workdir / "checkpoints", max_to_keep=keep_checkpoints)
            if workdir is not None else None)
    loop = None
    try:
        start = 0
        if ckpt is not None and ckpt.latest_step() is not None:
            if not resume:
                raise FileExistsError(f"{ckpt.directory} already holds checkpoints "
                                      f"{ckpt.all_steps()}; use another workdir or resume=True")
            start = ckpt.restore(model, optimizer)
        if start > num_steps:
            raise ValueError(f"{workdir} holds a checkpoint at step {start}, beyond "
                             f"num_steps={num_steps}")
        if mesh is not None:
            parallel.replicate(model, mesh)
            parallel.replicate(optimizer, mesh)
        lead = jax.process_index() == 0  # multi-host: one process writes history and bars
        history = History(workdir / "history.jsonl" if workdir is not None and lead else None)
        history.truncate(after_step=start)
        loop = _Loop(model, optimizer, step_fn, batch_fn, seed=seed, mesh=mesh, ckpt=ckpt,
                     history=history, t0=t0, workdir=workdir, steps_per_update=steps_per_update)
        if eval_fn is not None and eval_at_start and start == 0:
            loop.evaluate(eval_fn, 0)
        bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not (progress and lead),
                   dynamic_ncols=True)
        step = start
        with bar:
            for step in range(start + 1, num_steps + 1):
                loop.run_step(step, timed=time_budget is not None)
                bar.update(1)
                out_of_time = (time_budget is not None and step > start + 1  # one timed step
                               and loop.timed_seconds >= time_budget)
                last = step == num_steps or out_of_time
                do_log = step % log_every == 0 or last
                do_eval = eval_fn is not None and (
                    (eval_every and step % eval_every == 0) or last)
                do_ckpt = ckpt is not None and ((ckpt_every and step % ckpt_every == 0) or last)
                if do_log or do_eval or do_ckpt:
                    loop.check(step)
                if do_log:
                    rec = loop.log(step)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items()
                                     if k in ("loss", "reward_mean")})
                if do_ckpt:
                    loop.checkpoint(step)
                if do_eval:
                    loop.evaluate(eval_fn, step)
                if out_of_time:
                    break
        return FitResult(step=step, start_step=start, seconds=time.perf_counter() - t0,
                         history=history, last_metrics=loop.last_metrics,
                         timed_seconds=loop.timed_seconds if time_budget is not None else None)
    finally:
        if loop is not None:
            loop.sync()  # the live objects hold the last step's state, also when raising
        if ckpt is not None:
            ckpt.close()  # waits for asynchronous saves, also when raising


class _Loop:
    """The state of one :func:`fit` call; one method per thing a step may trigger."""

    def __init__(self, model, optimizer, step_fn, batch_fn, *, seed, mesh, ckpt, history, t0,
                 workdir, steps_per_update):
        self.model, self.optimizer = model, optimizer
        self.step_fn, self.batch_fn = step_fn, batch_fn
        # The step runs as one pure function of a state kept here between steps (a plain
        # in-place step function: the live objects are its state); sync writes it back.
        functional = getattr(step_fn, "functional", None)
        self.pure = (functional(model, optimizer) if functional is not None
                     else _in_place(step_fn, model, optimizer))
        self.state = self.pure.state
        self.timed_seconds, self.t_first = 0.0, None
        self.key = jax.random.key(seed)
        self.mesh, self.ckpt, self.history = mesh, ckpt, history
        self.t0, self.workdir, self.steps_per_update = t0, workdir, steps_per_update
        previous = history.records()
        # Training time continues across resumes; a finished run keeps its last metrics.
        self.t_offset = previous[-1]["time"] if previous else 0.0
        train_recs = [r for r in previous if r.get("kind") == "train"]
        self.last_metrics: dict[str, float] = (
            {k: v for k, v in train_recs[-1].items()
             if k not in ("kind", "step", "time", "steps_per_s", "update")}
            if train_recs else {})
        self.pending: list[tuple[int, Mapping[str, Any]]] = []  # on-device metrics, unchecked
        self.checked: list[tuple[int, dict[str, float]]] = []  # fetched, since the last log
        self.t_log = time.perf_counter()

    def run_step(self, step: int, timed: bool = False) -> None:
        index = step - 1
        batch = self.batch_fn(index)
        if self.mesh is not None:
            batch = parallel.shard_batch(batch, self.mesh)
        rng = jax.random.fold_in(self.key, index)
        self.state, metrics = self.pure.step(self.state, batch, rng)
        if "loss" not in metrics:
            raise KeyError(f"step_fn must return a 'loss' metric; got {sorted(metrics)}")
        self.pending.append((step, metrics))  # no device sync here (unless timed)
        if timed:  # the wall time of updates: wait for this one; the first compiles
            jax.block_until_ready(metrics["loss"])
            now = time.perf_counter()
            if self.t_first is not None:
                self.timed_seconds = now - self.t_first
            else:
                self.t_first = now

    def check(self, step: int) -> None:
        """Fetches the pending metrics (one sync) and stops on a non-finite loss."""
        fetched = jax.device_get([m for _, m in self.pending])
        steps = [s for s, _ in self.pending]
        self.pending = []
        for s, m in zip(steps, fetched, strict=True):
            values = {k: float(np.mean(v)) for k, v in m.items()}
            if not math.isfinite(values["loss"]):
                window = (steps[0], step)
                self._stop(f"loss is {values['loss']} at step {s}", s, window)
            self.checked.append((s, values))

    def log(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        n = len(self.checked)
        keys = list(dict.fromkeys(k for _, m in self.checked for k in m))
        means = {k: float(np.mean([m[k] for _, m in self.checked if k in m])) for k in keys}
        record = {"kind": "train", "step": step, "time": self.t_offset + now - self.t0,
                  "steps_per_s": n / max(now - self.t_log, 1e-9), **means}
        if self.steps_per_update > 1:
            record["update"] = step // self.steps_per_update
        self.history.append(record)
        self.checked, self.t_log, self.last_metrics = [], now, means
        return means

    def sync(self) -> None:
        """Writes the state into the live model and optimizer (continuing from a copy, so the
        next donated step never takes the live objects' arrays)."""
        self.state = self.pure.sync(self.state)

    def checkpoint(self, step: int) -> None:
        self.sync()
        if not checkpoint.all_finite(nnx.state(self.model, nnx.Param)):
            self._stop(f"parameters became non-finite by step {step} although every loss "
                       f"up to it was finite", step, (step, step))
        self.ckpt.save(step, self.model, self.optimizer)

    def evaluate(self, eval_fn: EvalFn, step: int) -> None:
        self.sync()
        metrics = dict(eval_fn(self.model, step))
        self.history.append({"kind": "eval", "step": step,
                             "time": self.t_offset + time.perf_counter() - self.t0,
                             **metrics})

    def _stop(self, what: str, step: int, window: tuple[int, int]):
        last_good = None
        if self.ckpt is not None:
            self.ckpt.wait()
            last_good = self.ckpt.latest_step()
        where = (f"The last good checkpoint is step {last_good} in {self.ckpt.directory}; "
                 f"rlcv_lib.checkpoint.restore(that directory, model, optimizer) loads it."
                 if last_good is not None else "No checkpoint was written before it.")
        raise NonFiniteLossError(
            f"Training stopped: {what} (found when checking steps {window[0]}..{window[1]}; "
            f"step s used batch_fn(s - 1)). {where} Try a lower learning rate, gradient "
            f"clipping (train.grad_clip_norm), or look for a division by zero in the loss.",
            step=step, window=window, last_good_step=last_good, workdir=self.workdir)
