"""The parts of a UViM stage II RL step, timed alone on the cpu preset (shared by
``bench_colorization_step.py`` and ``bench_panoptic_step.py``): sampling the codes, stage I
decoding of the samples, the task's host reward (decoding included) and the whole RL step, with
the shipped stage II and stage I, ``tune.batch_size`` images × ``rl.num_samples`` samples.

Each part is timed after its compiling call, blocked until ready, best of ``repeats``; the
parts need not add up to the step (it also moves the decoded outputs to the host and back the
rewards), and the gradient is the rest of the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from record import best_of


@dataclasses.dataclass
class StepParts:
    """The measured parts (seconds) and what they ran on."""

    cfg: Any
    task: Any
    batch: dict[str, np.ndarray]
    tokens: np.ndarray
    """The sampled code tokens [B,N,L]."""
    outputs: dict[str, np.ndarray]
    """Stage I's outputs of the samples, flattened to [B·N, ...]."""
    step: float
    sample: float
    decode: float
    reward: float


def measure(task_name: str, recipe: Any, repeats: int) -> StepParts:
    """Times the parts of the RL step of ``task_name``'s shipped stage II (``recipe``)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from rlcv_lib.config import get_config
    from rlcv_lib.core import evaluate as ev
    from rlcv_lib.core import sampling, shipped, steps
    from rlcv_lib.tasks.uvim import stage1

    cfg = get_config("cpu", task=task_name)
    pre = shipped.load_or_pretrain(recipe, cfg, None)
    task, model = pre.task, pre.model
    b, n = cfg.tune.batch_size, cfg.rl.num_samples
    batch = task.batch(ev.load_split(cfg, "validation", b).batch)
    images = jnp.asarray(batch["image"])
    spec = steps.rl_spec(task, cfg.rl)
    key = jax.random.key(0)

    def sample():
        return jax.block_until_ready(sampling.sample_jit(model, images, key, spec).tokens)

    tokens = np.asarray(sample())
    flat = jnp.asarray(task.detokenize(tokens).reshape(b * n, -1))
    ctx = jnp.asarray(np.repeat(batch["context"], n, axis=0))

    def decode():
        return jax.block_until_ready(stage1.decode_codes(task.frozen, flat, ctx))

    outputs = {k: np.asarray(v) for k, v in decode().items()}
    live = nnx.clone(model)
    optimizer = nnx.Optimizer(live, optax.adafactor(cfg.tune.lr), wrt=nnx.Param)
    rl_step = steps.make_rl_step(task, cfg.rl)
    rl_batch = {**batch, "tokens": tokens[:, 0]}

    def step():
        return jax.block_until_ready(rl_step(live, optimizer, rl_batch, key)["loss"])

    step()  # compiles
    task.reward(tokens, batch)  # warms the reward's decoding
    return StepParts(cfg, task, batch, tokens, outputs, step=best_of(step, repeats)[0],
                     sample=best_of(sample, repeats)[0], decode=best_of(decode, repeats)[0],
                     reward=best_of(lambda: task.reward(tokens, batch), repeats)[0])


def add_parts(suite: Any, parts: StepParts, reward_label: str) -> None:
    """The step and its parts as rows of ``suite`` (each part's share of the step noted)."""
    suite.add("RL step (sample, decode, reward, update)", parts.step * 1e3, "ms/step")
    for label, t in (("sampling the codes (jit)", parts.sample),
                     ("stage I decoding of the samples (jit)", parts.decode),
                     (reward_label, parts.reward)):
        suite.add(label, t * 1e3, "ms/step", note=f"{t / parts.step:.0%} of the step")
