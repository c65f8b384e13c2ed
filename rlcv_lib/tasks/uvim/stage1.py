"""UViM stage I: the training step of the VQ-VAE and its evaluation forwards.

A stage I batch holds the context image and one array per target of the model's config::

    batch = {"image": float [B,H,W,3], <target name>: float [B,H,W,C], ...}

and each target has a reconstruction loss (``losses[name]``):

* ``"l2"``: mean squared error over pixels and channels (colorization: RGB on [−1, 1]);
* ``"xent"``: softmax cross-entropy against a one-hot (or soft) target over the channels, mean
  over pixels (panoptic: semantic and instance channels).

The step's loss is their sum. A task plugs into stage I pretraining with a :class:`Stage1Task`
(its VQ-VAE config, losses, and how a scenes batch becomes a stage I batch) and
:func:`make_recipe`, a :class:`~rlcv_lib.core.pretrain.Recipe` that the shared pretraining,
shipping and command line run like any MLE recipe.

The step (:func:`make_step`) has the trainer's contract (docs/design.md §7.4: ``step(model,
optimizer, batch, rng)`` and its donated pure form): it draws the code-dropout mask from
``rng``, takes one gradient step on the parameters, then adds the batch's code assignments to
the codebook's moving averages and revives dead codes (the codebook is not a parameter;
:mod:`rlcv_lib.models.vqvae`). Its metrics: ``loss``, ``loss/<name>``,
``grad_norm`` and the batch's codebook usage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlcv_lib.core import steps
from rlcv_lib.core.pretrain import Recipe
from rlcv_lib.models import vqvae
from rlcv_lib.models.vqvae import VQVAE

LOSSES = ("l2", "xent")
"""The reconstruction losses a target can have (module docstring)."""


def check_losses(model_targets: tuple[tuple[str, int], ...], losses: Mapping[str, str]) -> None:
    """Raises ValueError unless every target of the model has a known loss and no other does."""
    names = [n for n, _ in model_targets]
    if set(losses) != set(names):
        raise ValueError(f"losses must name exactly the model's targets {names}, got "
                         f"{sorted(losses)}")
    bad = {n: k for n, k in losses.items() if k not in LOSSES}
    if bad:
        raise ValueError(f"unknown losses {bad}; choose from {list(LOSSES)}")


def reconstruction_loss(outputs: Mapping[str, jax.Array], targets: Mapping[str, jax.Array],
                        losses: Mapping[str, str]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(sum of the targets' losses, {"loss/<name>": each}) for outputs and targets
    {name: [B,H,W,C]}."""
    parts = {}
    for name, kind in losses.items():
        out, tgt = outputs[name], targets[name]
        if kind == "l2":
            parts[name] = jnp.mean((out - tgt) ** 2)
        else:
            parts[name] = jnp.mean(optax.softmax_cross_entropy(out, tgt))
    return sum(parts.values()), {f"loss/{n}": v for n, v in parts.items()}


def _targets(model_targets, batch) -> dict[str, jax.Array]:
    missing = [n for n, _ in model_targets if n not in batch]
    if missing or "image" not in batch:
        raise KeyError(f"a stage I batch needs 'image' and the targets "
                       f"{[n for n, _ in model_targets]}; it lacks {missing or ['image']}")
    return {n: jnp.asarray(batch[n], jnp.float32) for n, _ in model_targets}


def make_step(cfg: vqvae.VQVAEConfig, losses: Mapping[str, str]):
    """The stage I training step for models of ``cfg`` (module docstring)."""
    cfg.validate()
    check_losses(cfg.targets, losses)
    losses = dict(losses)

    def update_in_place(model, optimizer, targets, image, rng):
        k_drop, k_split = jax.random.split(rng)
        keep = vqvae.code_dropout_mask(k_drop, image.shape[0], cfg.num_codes, cfg.code_dropout)

        def loss_fn(m):
            outputs, aux = m(targets, image, keep)
            loss, parts = reconstruction_loss(outputs, targets, losses)
            return loss, (parts, aux)

        (loss, (parts, aux)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        usage = model.learn_codebook(aux, k_split)
        return {"loss": loss, "grad_norm": optax.global_norm(grads), **parts, **usage}

    def arrays(batch, rng):
        if rng is None:
            raise ValueError("the stage I step draws code dropout and code splits: pass rng")
        return (_targets(cfg.targets, batch), jnp.asarray(batch["image"], jnp.float32), rng)

    def check(model):
        if not isinstance(model, VQVAE) or model.cfg != cfg:
            raise ValueError("the stage I step was made for another VQ-VAE config than the "
                             "model's")

    return steps.update_step(update_in_place, arrays, check=check)


@nnx.jit
def encode_codes(model: VQVAE, targets: Mapping[str, jax.Array], image: jax.Array) -> jax.Array:
    """Codes int32 [B, L] of ``targets`` given ``image`` (evaluation: no dropout): what stage II
    learns to emit."""
    return model.quantize(model.encode(targets, image))[1]


@nnx.jit
def reconstruct(model: VQVAE, targets: Mapping[str, jax.Array], image: jax.Array
                ) -> dict[str, jax.Array]:
    """The evaluation forward: outputs from all of the targets' codes."""
    return model(targets, image)[0]


@nnx.jit
def reconstruct_without_codes(model: VQVAE, image: jax.Array) -> dict[str, jax.Array]:
    """The all-codes-dropped control: outputs from the image alone (every code zeroed), what the
    decoder can tell without the codes."""
    b, cfg = image.shape[0], model.cfg
    return model.decode(jnp.zeros((b, cfg.num_codes, cfg.codeword_dim)), image)


@nnx.jit
def decode_codes(model: VQVAE, codes: jax.Array, image: jax.Array) -> dict[str, jax.Array]:
    """Outputs from codes int [B, L] given ``image`` (any integer sequence decodes): stage II's
    detokenizer."""
    return model.decode_codes(codes, image)


# ---------------------------------------------------------------------------------------------
# Stage I as a pretraining recipe.


@dataclasses.dataclass(frozen=True, eq=False)
class Stage1Task:
    """What stage I pretraining needs from a UViM task."""

    name: str
    vqvae: vqvae.VQVAEConfig
    """The stage I model's config (its targets are the keys of ``losses``)."""
    losses: Mapping[str, str]
    """Reconstruction loss per target (:data:`LOSSES`)."""
    make_batch: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    """A scenes batch (``image`` float [B,H,W,3] in [0, 1] and the annotations) -> a stage I
    batch (module docstring)."""
    metrics: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], dict[str, float]]
    """``(outputs, stage I batch) -> {name: value}``: the task's reconstruction quality (PSNR,
    PQ, ...), reported with all codes and with none."""


def evaluate_stage1(task: Stage1Task, model: VQVAE, batch: Mapping[str, np.ndarray]
                    ) -> dict[str, float]:
    """Validation metrics of a stage I model on a stage I ``batch``: the loss and the task's
    metrics from all codes and from none (the all-codes-dropped control: what the codes carry
    beyond the image), and the codebook usage of the batch's codes."""
    targets = {n: jnp.asarray(batch[n], jnp.float32) for n in task.losses}
    image = jnp.asarray(batch["image"], jnp.float32)
    with_codes = reconstruct(model, targets, image)
    without = reconstruct_without_codes(model, image)
    codes = encode_codes(model, targets, image)
    out = {}
    for suffix, outputs in (("", with_codes), ("_without_codes", without)):
        loss, _ = reconstruction_loss(outputs, targets, task.losses)
        out[f"loss{suffix}"] = float(loss)
        host = {k: np.asarray(v) for k, v in outputs.items()}
        out |= {f"{k}{suffix}": float(v) for k, v in task.metrics(host, batch).items()}
    usage = vqvae.codebook_usage(vqvae.batch_counts(codes, model.cfg.codebook_size))
    return out | {k: float(v) for k, v in usage.items()}


def make_recipe(name: str, make_task: Callable[[Any, str | None], Stage1Task]) -> Recipe:
    """The stage I pretraining recipe of task ``name``: the VQ-VAE of ``task.vqvae`` (seeded by
    ``run.seed``), the stage I step, the ``stage1`` training section, batches from
    ``task.make_batch`` and :func:`evaluate_stage1` on the validation scenes. No wrong-image
    control (the model emits no tokens)."""

    def batch_fn(task, loader, seed):
        return lambda step: task.make_batch(loader.batch(step))

    def evaluator(task, val):
        batch = task.make_batch(val.batch)
        return lambda model, step=0: evaluate_stage1(task, model, batch)

    return Recipe(name=name, make_task=make_task, make_batch_fn=batch_fn,
                  make_evaluator=evaluator,
                  build=lambda cfg, task: VQVAE(task.vqvae, rngs=nnx.Rngs(cfg.run.seed)),
                  make_step=lambda cfg, task: make_step(task.vqvae, task.losses),
                  train_section="stage1")
