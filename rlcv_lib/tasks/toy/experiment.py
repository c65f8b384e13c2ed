"""The two steps of the paper on the toy sorting task (:mod:`rlcv_lib.tasks.toy.task`), end to end.

Step 1 trains the encoder-decoder by maximum likelihood on the sorted target sequences; step 2
tunes it with REINFORCE (leave-one-out baseline over N samples per image) to maximise the
task's reward: the fraction of positions the *written* sequence gets right. The teaching
notebook ``02_reward_tuning_toy`` shows the two ``train.fit`` calls cell by cell, from
:func:`make_task`, :func:`mle_config`, :func:`tune_config`, :func:`rl_config` and
:func:`make_evaluator`; :func:`run` is the same two calls at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import optim, steps, train
from rlcv_lib.core.history import History
from rlcv_lib.core.reinforce import RLConfig
from rlcv_lib.models import MODEL_SIZES, build_model
from rlcv_lib.tasks.toy.task import SortTask


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """The toy experiment. At the cpu preset MLE is stopped early on purpose (greedy reward
    about 0.7), so that tuning has room; expect the *sampled* reward, which REINFORCE
    maximises, to rise by several points, while the greedy decode moves little."""

    max_numbers: int = 4
    """Numbers per image (1..max_numbers); sequences have max_numbers + 1 tokens."""
    num_values: int = 10
    """Values 0..num_values-1."""
    model_size: str = "tiny"
    """A name of ``rlcv_lib.models.MODEL_SIZES`` (its image_size becomes the toy's)."""
    mle_steps: int = 100
    """MLE updates (batch ``batch_size``)."""
    mle_lr: float = 3e-3
    """Peak MLE learning rate (AdamW, cosine after warmup)."""
    tune_steps: int = 150
    """REINFORCE updates."""
    tune_lr: float = 3e-4
    """Constant tuning learning rate (AdamW)."""
    batch_size: int = 32
    """MLE examples per update."""
    tune_batch_size: int = 16
    """Images per tuning update (each sampled ``num_samples`` times)."""
    num_samples: int = 8
    """N samples per image while tuning (leave-one-out baseline)."""
    eval_examples: int = 512
    """Held-out images scored before, during and after tuning."""
    eval_every: int = 25
    """Tuning updates between held-out evaluations (the reward curve)."""


TOY_PRESETS: dict[str, ToyConfig] = {
    "smoke": ToyConfig(mle_steps=6, tune_steps=4, batch_size=8, tune_batch_size=4,
                       num_samples=4, eval_examples=32, eval_every=2),
    "cpu": ToyConfig(),
    "gpu": ToyConfig(mle_steps=300, tune_steps=1000, tune_batch_size=64, eval_examples=2048,
                     eval_every=100),
    "paper": ToyConfig(mle_steps=300, tune_steps=1000, tune_batch_size=64, eval_examples=2048,
                       eval_every=100),
}


@dataclasses.dataclass
class ToyResult:
    """What :func:`run` measured; ``before``/``after`` hold :func:`evaluate`'s dicts."""

    task: SortTask
    model: Any
    before: dict[str, float]
    after: dict[str, float]
    mle_history: History
    tune_history: History
    heldout: dict[str, np.ndarray]


def make_task(toy: ToyConfig) -> tuple[SortTask, Any]:
    """(the toy task of ``toy``, its model size): the size's image side is the task's."""
    size = MODEL_SIZES[toy.model_size]
    return SortTask(max_numbers=toy.max_numbers, num_values=toy.num_values,
                    image_size=size.image_size), size


def mle_config(toy: ToyConfig) -> train.TrainConfig:
    """Step 1's optimisation: AdamW, cosine after a short warm-up, ``toy.mle_steps`` updates."""
    return train.TrainConfig(optimizer="adamw", lr=toy.mle_lr, warmup_steps=10,
                             schedule="cosine", batch_size=toy.batch_size,
                             num_steps=toy.mle_steps, log_every=5)


def tune_config(toy: ToyConfig) -> train.TrainConfig:
    """Step 2's optimisation: AdamW at a constant ``toy.tune_lr``, ``toy.tune_steps`` updates."""
    return train.TrainConfig(optimizer="adamw", lr=toy.tune_lr, warmup_steps=5,
                             schedule="constant", batch_size=toy.tune_batch_size,
                             num_steps=toy.tune_steps, log_every=5)


def rl_config(toy: ToyConfig) -> RLConfig:
    """REINFORCE with ``toy.num_samples`` samples per image and the leave-one-out baseline."""
    return RLConfig(num_samples=toy.num_samples)


def make_evaluator(task: SortTask, toy: ToyConfig, seed: int):
    """``fn(model) -> {greedy_reward, greedy_exact, sampled_reward}`` on fixed held-out images
    (greedy decoding; and ``num_samples`` samples at temperature 1 with a fixed key)."""
    heldout = task.batch(ev.seed_for(seed, "heldout"), 0, toy.eval_examples)
    greedy = steps.make_eval_fn(task)
    sample = steps.make_sample_fn(task, RLConfig(num_samples=toy.num_samples))
    key = jax.random.key(ev.seed_for(seed, "eval"))

    def evaluate(model) -> dict[str, float]:
        tokens = np.asarray(greedy(model, heldout))[:, None]  # [B,1,L]
        reward, aux = task.reward(tokens, heldout)
        sampled, _ = task.reward(np.asarray(sample(model, heldout["image"], key).tokens), heldout)
        return {"greedy_reward": float(reward.mean()), "greedy_exact": float(aux["exact_match"]),
                "sampled_reward": float(sampled.mean())}

    return evaluate, heldout


def run(toy: ToyConfig, seed: int = 0, progress: bool = True) -> ToyResult:
    """MLE then REINFORCE on the toy task (in memory: seconds to minutes, no checkpoints): the
    two ``train.fit`` calls that notebook ``02_reward_tuning_toy`` shows cell by cell."""
    task, size = make_task(toy)
    model = build_model(size, task, seed=seed)
    evaluate, heldout = make_evaluator(task, toy, seed)

    mle_cfg = mle_config(toy)
    mle = train.fit(model, optim.make_optimizer(model, mle_cfg), steps.make_mle_step(task),
                    lambda s: task.batch(seed, s, mle_cfg.batch_size), seed=seed,
                    num_steps=mle_cfg.num_steps, log_every=mle_cfg.log_every,
                    progress=progress, desc="MLE")
    before = evaluate(model)

    tune_cfg, tune_seed = tune_config(toy), ev.seed_for(seed, "tune")
    tune = train.fit(model, optim.make_optimizer(model, tune_cfg),
                     steps.make_rl_step(task, rl_config(toy)),
                     lambda s: task.batch(tune_seed, s, tune_cfg.batch_size), seed=tune_seed,
                     num_steps=tune_cfg.num_steps, log_every=tune_cfg.log_every,
                     eval_fn=lambda m, step: evaluate(m), eval_every=toy.eval_every,
                     eval_at_start=True, progress=progress, desc="REINFORCE")
    return ToyResult(task=task, model=model, before=before, after=evaluate(model),
                     mle_history=mle.history, tune_history=tune.history, heldout=heldout)
