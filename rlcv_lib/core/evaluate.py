"""Evaluation shared by every task (docs/design.md §8): the one home of

* **splits** (:class:`Split`, :func:`load_split`): the first scenes of a split, as examples for
  the reference metrics and as one collated batch; validation chooses, test reports;
* **chunked model calls** (:func:`decode`, :func:`sample`, :func:`teacher_forced`): a model
  applied to many images a chunk at a time; chunk ``c`` of a sampling call draws with
  ``fold_in(key, c)``, so every result is a pure function of (model, images, key, chunk);
* **the best-state keeper** (:class:`BestState`): the checkpoint choice on validation;
* **the controls**: the wrong-image control (:func:`wrong_image_control`, :func:`control_rows`)
  and MLE trained on for as long as tuning took (:func:`update_seconds`, :func:`continue_mle`);
* **statistics**: :func:`pearson`, :func:`summarize`, :func:`seed_spread`;
* **seed offsets** (:data:`SEED_OFFSETS`, :func:`seed_for`): which stream of randomness each
  phase of an experiment draws from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlcv_lib.core import checkpoint, optim, sampling, steps
from rlcv_lib.core.history import History
from rlcv_lib.core.reinforce import RLConfig
from rlcv_lib.data import pipeline, scenes, sources

# ------------------------------------------------------------------------------------- seeds

SEED_OFFSETS: Mapping[str, int] = {"pretrain": 0, "tune": 1_000, "mle_as_long": 2_000,
                                   "eval": 7, "heldout": 10_000}
"""``run.seed + offset`` seeds each phase: MLE pretraining's data order and keys (0), reward
tuning's (1,000: tuning never replays pretraining's batches in the same order), the
MLE-as-long control's data (2,000), the fixed sampling key of validation evaluations (7), and
the held-out images of the toy task, whose procedural world has no splits (10,000)."""


def seed_for(run_seed: int, purpose: str) -> int:
    """The seed of ``purpose`` (a key of :data:`SEED_OFFSETS`) in a run seeded ``run_seed``."""
    if purpose not in SEED_OFFSETS:
        raise ValueError(f"unknown seed purpose {purpose!r}; choose from {sorted(SEED_OFFSETS)}")
    return int(run_seed) + SEED_OFFSETS[purpose]


# ------------------------------------------------------------------------------------ splits


@dataclasses.dataclass(frozen=True)
class Split:
    """The first scenes of a split, as examples (for the judges) and one collated batch."""

    name: str
    examples: list[dict[str, Any]]
    batch: dict[str, np.ndarray]
    """``image`` float32 [B,H,W,3] and the collated targets (``boxes``, ``labels``,
    ``captions``, ...)."""

    def __len__(self) -> int:
        return len(self.examples)

    def head(self, n: int) -> Split:
        """The first ``n`` examples (a view of the same scenes)."""
        return Split(self.name, self.examples[:n], {k: v[:n] for k, v in self.batch.items()})


def load_split(cfg: Any, split: str, num_examples: int, cache_dir: str | None = None) -> Split:
    """The first ``min(num_examples, split size)`` scenes of ``split`` ("validation" for
    choices, "test" for reported numbers)."""
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be >= 1")
    size = min(int(num_examples), scenes.split_size(cfg.world, split))
    src = sources.open_source("scenes", split, world=cfg.world, cache_dir=cache_dir, size=size)
    examples = [src[i] for i in range(len(src))]
    return Split(split, examples, pipeline.collate(examples, max_boxes=cfg.world.max_objects))


# ----------------------------------------------------------------------- chunked model calls


def chunks(n: int, chunk: int) -> list[slice]:
    """Slices of ``range(n)`` of at most ``chunk`` items each: how model calls are batched."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [slice(lo, lo + chunk) for lo in range(0, n, chunk)]


def decode(model, task: Any, images: np.ndarray, method: str = "greedy", beam_size: int = 4,
           *, spec: sampling.DecodeSpec | None = None, chunk: int = 256) -> np.ndarray:
    """int32 [B,L]: the deterministic decode of ``images`` [B,H,W,3]
    (:func:`rlcv_lib.core.steps.make_eval_fn`): ``"greedy"``, or ``"beam"`` (the best of
    ``beam_size`` beams by summed log-probability), under ``spec`` (default: the task's
    grammar)."""
    fn = steps.make_eval_fn(task, method, beam_size, spec=spec)
    return np.concatenate([np.asarray(fn(model, {"image": jnp.asarray(images[s])}))
                           for s in chunks(len(images), chunk)])


def sample(model, task: Any, images: np.ndarray, num_samples: int, key: jax.Array, *,
           spec: sampling.DecodeSpec | None = None, chunk: int = 128) -> np.ndarray:
    """int32 [B,N,L]: ``num_samples`` sequences per image, by ``spec`` (default: the RL protocol,
    temperature 1 and no truncation, under the task's grammar); chunk ``c`` draws with
    ``fold_in(key, c)``."""
    if spec is None:
        spec = steps.rl_spec(task, RLConfig(num_samples=num_samples, baseline="none"))
    elif spec.num_samples != num_samples:
        spec = dataclasses.replace(spec, num_samples=num_samples)
    return np.concatenate([
        np.asarray(sampling.sample_jit(model, jnp.asarray(images[s]), jax.random.fold_in(key, c),
                                       spec).tokens)
        for c, s in enumerate(chunks(len(images), chunk))])


def teacher_forced(model, task: Any, images: np.ndarray, tokens: np.ndarray, *,
                   chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logprobs float32 [B,L], log_softmax float32 [B,L,V]) of ``tokens`` int32 [B,L] given
    ``images``, teacher-forced under the task's grammar (what scores and NLLs are read from)."""
    spec = sampling.DecodeSpec.for_task(task)
    lp, lsm = [], []
    for s in chunks(len(tokens), chunk):
        tf = sampling.teacher_forced_jit(model, jnp.asarray(images[s]),
                                         jnp.asarray(tokens[s])[:, None], spec)
        lp.append(np.asarray(tf.logprobs[:, 0]))
        lsm.append(np.asarray(tf.log_softmax[:, 0]))
    return np.concatenate(lp), np.concatenate(lsm)


def masked_nll(model, task: Any, images: np.ndarray, tokens: np.ndarray,
               masks: Mapping[str, np.ndarray], chunk: int = 256) -> dict[str, float]:
    """Mean teacher-forced NLL (nats per token) of ``tokens`` [B,L] given ``images`` within each
    mask of ``masks`` (bool [B,L]); NaN for an empty mask."""
    lp, _ = teacher_forced(model, task, images, tokens, chunk=chunk)
    return {k: float(-lp[m].mean()) if m.any() else float("nan") for k, m in masks.items()}


# ----------------------------------------------------------------------- the checkpoint choice


class BestState:
    """Keeps the model state of the evaluation with the highest ``metric`` (ties keep the
    earlier step): in memory, or with ``directory`` as one synchronous Orbax checkpoint there.
    On disk, a run resumed in the same workdir recovers the best so far from the checkpoint and
    the eval records of ``history``. Step 0 (the starting model) is a candidate like any other,
    so a tuning that never beats it on validation returns the starting model itself."""

    def __init__(self, metric: str, directory: str | Path | None = None,
                 history: str | Path | None = None):
        self.metric = metric
        self.ckpt = (None if directory is None else
                     checkpoint.Checkpointer(directory, max_to_keep=1, async_save=False))
        self.step: int | None = None if self.ckpt is None else self.ckpt.latest_step()
        self.value = -np.inf
        self._state: Any = None
        if self.step is not None and history is not None:
            evals = [r for r in History(history).records("eval") if r["step"] == self.step]
            self.value = evals[-1][metric] if evals else -np.inf

    def offer(self, model, step: int, metrics: Mapping[str, float]) -> bool:
        """Keeps ``model``'s state if ``metrics[metric]`` beats the best so far; returns whether."""
        if self.metric not in metrics:
            raise KeyError(f"metric {self.metric!r} not in the evaluation {sorted(metrics)}")
        value = float(metrics[self.metric])
        if not value > self.value:
            return False
        if self.ckpt is None:
            self._state = jax.tree.map(np.array, nnx.state(model))
        else:
            self.ckpt.save(step, model)  # steps only grow: max_to_keep=1 drops the older best
            self.ckpt.wait()
        self.step, self.value = int(step), value
        return True

    def restore(self, model) -> int:
        """Writes the best state into ``model``; returns its step."""
        if self.step is None:
            raise RuntimeError(f"no evaluation was offered to this BestState ({self.metric})")
        if self.ckpt is None:
            nnx.update(model, jax.tree.map(jnp.asarray, self._state))
            return self.step
        return self.ckpt.restore(model, step=self.step)

    def close(self) -> None:
        if self.ckpt is not None:
            self.ckpt.close()


# -------------------------------------------------------------------------------- controls


def wrong_image_control(recipe: Any, model, task: Any, batch: Mapping[str, np.ndarray]
                        ) -> dict[str, dict[str, float]] | None:
    """NLL per token kind (``recipe.token_masks``) of ``batch``'s ground truth
    (``recipe.truth_tokens``) with its true images and with the images rolled by one (each
    sequence paired with another scene): ``{"true": {...}, "wrong": {...}, "gap": wrong -
    true}``. A gap near 0 means the model does not use the image for that kind. None for a
    recipe whose model emits no tokens (no ``truth_tokens``)."""
    if recipe.truth_tokens is None:
        return None
    if len(batch["image"]) < 2:
        raise ValueError(f"the wrong-image control needs >= 2 images, got {len(batch['image'])}")
    tokens = recipe.truth_tokens(task, batch)
    masks = recipe.token_masks(task, tokens)
    images = recipe.images(task, batch)
    true = masked_nll(model, task, images, tokens, masks)
    wrong = masked_nll(model, task, np.roll(images, 1, axis=0), tokens, masks)
    return {"true": true, "wrong": wrong, "gap": {k: wrong[k] - true[k] for k in true}}


def control_rows(control: Mapping[str, Mapping[str, float]], kind: str = "token kind",
                 order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Table rows ``{kind, "NLL true image", "NLL wrong image", "gap"}`` of a wrong-image
    control: the kinds of ``order`` first (a shipped manifest stores them sorted), then any
    other."""
    kinds = [k for k in order if k in control["true"]]
    kinds += [k for k in control["true"] if k not in kinds]
    return [{kind: k, "NLL true image": control["true"][k],
             "NLL wrong image": control["wrong"][k], "gap": control["gap"][k]} for k in kinds]


def update_seconds(history: History) -> float:
    """Seconds that a run's updates take at its steady rate: its last train step divided by
    the median ``steps_per_s`` of its train records (robust to the first interval's compile
    and to the intervals that hold an evaluation)."""
    recs = [r for r in history.records("train") if r.get("steps_per_s", 0) > 0]
    if not recs:
        raise ValueError("the history holds no train record with steps_per_s")
    return recs[-1]["step"] / float(np.median([r["steps_per_s"] for r in recs]))


def continue_mle(recipe: Any, cfg: Any, model, task: Any, seconds: float, *,
                 cache_dir: str | None = None, train_size: int | None = None,
                 max_steps: int | None = None) -> tuple[Any, dict[str, float]]:
    """(a copy of ``model`` trained on by MLE for ``seconds`` of updates, info ``{steps,
    seconds}``): the control "is tuning better than just training more?". ``train.fit`` with
    a ``time_budget``: the first update (it compiles) is done but not timed, like
    :func:`update_seconds` on tuning's side. ``cfg.train`` with its peak lr held constant
    after ``cfg.tune``'s warm-up and a fresh optimiser (as tuning starts); data: the training
    split through ``recipe.make_batch_fn`` seeded ``seed_for(run.seed, "mle_as_long")``.
    ``max_steps`` caps the updates (tests)."""
    from rlcv_lib.core import train

    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    model = nnx.clone(model)  # fit trains a private copy of the state: the original is kept
    if seconds == 0 or max_steps == 0:
        return model, {"steps": 0, "seconds": 0.0}
    tcfg = dataclasses.replace(cfg.train, schedule="constant",
                               warmup_steps=cfg.tune.warmup_steps)
    seed = seed_for(cfg.run.seed, "mle_as_long")
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=seed,
                             max_boxes=cfg.world.max_objects)
    run = train.fit(model, optim.make_optimizer(model, tcfg), steps.make_mle_step(task),
                    recipe.make_batch_fn(task, loader, seed), seed=seed,
                    num_steps=max_steps or 10**9, time_budget=seconds, log_every=50,
                    progress=False)
    return model, {"steps": run.step, "seconds": run.timed_seconds}


# ------------------------------------------------------------------------------ statistics

PERCENTILES = (10, 25, 50, 75, 90)
"""Percentiles of :func:`summarize` (NumPy's default linear interpolation)."""


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of two equally long series (NaN if either is constant or < 3)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"series of different lengths {x.shape} and {y.shape}")
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # (a constant's std can round > 0)
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def summarize(values: np.ndarray) -> dict[str, float]:
    """``{n, mean, std, p10, p25, p50, p75, p90}`` of ``values`` (any shape, flattened; std is
    the population std, percentiles NumPy's linear interpolation)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if not len(v):
        raise ValueError("summarize needs at least one value")
    qs = np.percentile(v, PERCENTILES)
    return {"n": len(v), "mean": float(v.mean()), "std": float(v.std()),
            **{f"p{p}": float(q) for p, q in zip(PERCENTILES, qs, strict=True)}}


def seed_spread(values: Sequence[float]) -> dict[str, float]:
    """``{n, mean, std, min, max}`` of one number over seeds (``std`` with ``ddof=1``, the
    sample standard deviation that "mean ± std over seeds" quotes; NaN for one seed)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if not len(v):
        raise ValueError("seed_spread needs at least one value")
    return {"n": len(v), "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "min": float(v.min()), "max": float(v.max())}
