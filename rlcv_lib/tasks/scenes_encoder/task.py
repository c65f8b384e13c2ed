"""The shared scenes encoder: a ViT pretrained once on the scenes training split with per-patch
supervision (:mod:`rlcv_lib.tasks.scenes_encoder.targets`), that every task's MLE can start
from (``model.encoder_init``, :mod:`rlcv_lib.core.encoder_init`; docs/design.md §4.3).

The paper's models all start from a pretrained ViT (ImageNet-21k); trained from scratch on a
2-core CPU, ours learnt to read colour but not shape. Here the encoder of the ``model`` section
(its ``image_size``, stem, widths and depth; the decoder fields are not used) gets one linear
head per target on its tokens and is trained by the weighted sum (config fields) of

* ``semantic``: soft cross-entropy of each patch against its category shares;
* ``shape``: soft cross-entropy against its thing pixels' class shares, averaged over patches
  weighted by their thing share (shape is a small part of ``semantic``, which stuff dominates);
* ``colour``: the same over the thing pixels' colour names (zero weight on grey inputs);
* ``centre``: cross-entropy of "which class of thing has its box centre here" (0: none), the
  mean over centre patches and the mean over the others averaged (few patches hold a centre).

A ``grey_fraction`` of the training images is given grey. Only the encoder is carried over to
the tasks; the heads are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlcv_lib.config import ConfigError
from rlcv_lib.core import steps, train
from rlcv_lib.core.pretrain import Recipe
from rlcv_lib.models.config import ModelConfig
from rlcv_lib.models.layers import KeySeq
from rlcv_lib.models.vit import ViT
from rlcv_lib.tasks.scenes_encoder import targets as tg

HEADS = ("semantic", "shape", "colour", "centre")


@dataclasses.dataclass(frozen=True)
class ScenesEncoderConfig:
    """Pretraining of the shared scenes encoder."""

    grey_fraction: float = 0.25
    """Share of training images given as grey (their colour targets masked)."""
    semantic_weight: float = 1.0
    """Weight of the per-patch category loss."""
    shape_weight: float = 1.0
    """Weight of the per-patch thing-class loss (over thing pixels only)."""
    colour_weight: float = 1.0
    """Weight of the per-patch thing-colour loss."""
    centre_weight: float = 1.0
    """Weight of the per-patch box-centre class loss."""


SCENES_ENCODER_PRESETS = {p: ScenesEncoderConfig() for p in ("smoke", "cpu", "gpu", "paper")}

TRAIN_PRESETS = {**train.TRAIN_PRESETS,
                 "cpu": dataclasses.replace(train.TRAIN_PRESETS["cpu"], num_steps=4000)}
"""The encoder's ``train`` section: the shared MLE settings, at ``cpu`` the 4,000 updates of the
shipped encoder (a bookkeeping field under the constant schedule: not in its config hash)."""


def check_config(cfg: Any) -> None:
    """Refuses contradictory fields (ConfigError naming both)."""
    from rlcv_lib.config import require, require_same_image_size

    require_same_image_size(cfg)
    if cfg.model.encoder_init:
        raise ConfigError(f"model.encoder_init={cfg.model.encoder_init!r}: the scenes encoder "
                          f"is pretrained from random weights (leave it at '')")
    require(cfg, cfg.model.image_size % cfg.model.patch_size == 0, "model.image_size",
            "model.patch_size", "the encoder cuts the image into whole patches")
    if not 0 <= cfg.scenes_encoder.grey_fraction <= 1:
        raise ConfigError(f"scenes_encoder.grey_fraction must be in [0, 1], got "
                          f"{cfg.scenes_encoder.grey_fraction}")


class ScenesEncoder(nnx.Module):
    """The ViT of ``cfg`` (attribute ``encoder``, the state every task's encoder takes) with
    one linear head per target: ``images [B,S,S,3] -> {head: logits [B,P,C]}``."""

    def __init__(self, cfg: ModelConfig, sizes: Mapping[str, int], *, rngs: nnx.Rngs):
        rngs = KeySeq(rngs)
        self.cfg = cfg
        self.encoder = ViT(cfg, rngs=rngs)
        self.heads = nnx.Dict({k: nnx.Linear(cfg.enc_width, sizes[k], rngs=rngs)
                               for k in HEADS})

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        tokens = self.encoder(images)
        return {k: self.heads[k](tokens).astype(jnp.float32) for k in HEADS}


def head_sizes(num_things: int, num_stuff: int) -> dict[str, int]:
    """Output classes per head for a world of ``num_things`` thing and ``num_stuff`` stuff
    classes."""
    return {"semantic": 1 + num_things + num_stuff, "shape": num_things,
            "colour": tg.NUM_COLOURS, "centre": 1 + num_things}


@dataclasses.dataclass(frozen=True, eq=False)
class EncoderTask:
    """What the recipe needs: the world's class counts, the patch size and the loss weights."""

    name: str
    patch: int
    num_things: int
    num_stuff: int
    weights: Mapping[str, float]
    grey_fraction: float

    @property
    def num_categories(self) -> int:
        """Void, things and stuff: the panoptic category ids ``0 .. T+U``."""
        return 1 + self.num_things + self.num_stuff

    @property
    def sizes(self) -> dict[str, int]:
        return head_sizes(self.num_things, self.num_stuff)

    def targets(self, batch: Mapping[str, np.ndarray], grey: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        return tg.patch_targets(batch, patch=self.patch, num_things=self.num_things,
                                num_stuff=self.num_stuff, grey=grey)


def make_task(cfg: Any, cache_dir: str | None = None) -> EncoderTask:
    check_config(cfg)
    w = cfg.scenes_encoder
    return EncoderTask(
        name="scenes_encoder", patch=cfg.model.patch_size,
        num_things=len(cfg.world.thing_classes), num_stuff=len(cfg.world.stuff_classes),
        grey_fraction=w.grey_fraction,
        weights={"semantic": w.semantic_weight, "shape": w.shape_weight,
                 "colour": w.colour_weight, "centre": w.centre_weight})


def weighted_xent(logits: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """Soft cross-entropy per patch, averaged with ``weight`` [B,P] (0 when all weights are)."""
    xent = optax.softmax_cross_entropy(logits, target)
    return jnp.sum(xent * weight) / jnp.maximum(jnp.sum(weight), 1e-6)


def losses(logits: Mapping[str, jax.Array], t: Mapping[str, jax.Array]
           ) -> dict[str, jax.Array]:
    """The per-head losses (module docstring)."""
    xent = optax.softmax_cross_entropy_with_integer_labels(logits["centre"], t["centre"])
    has = (t["centre"] > 0).astype(jnp.float32)
    centre = 0.5 * (jnp.sum(xent * has) / jnp.maximum(jnp.sum(has), 1.0)
                    + jnp.sum(xent * (1 - has)) / jnp.maximum(jnp.sum(1 - has), 1.0))
    return {"semantic": jnp.mean(optax.softmax_cross_entropy(logits["semantic"], t["semantic"])),
            "shape": weighted_xent(logits["shape"], t["shape"], t["thing_weight"]),
            "colour": weighted_xent(logits["colour"], t["colour"], t["colour_weight"]),
            "centre": centre}


_TARGET_KEYS = ("image", "semantic", "shape", "thing_weight", "colour", "colour_weight", "centre")


def make_step(task: EncoderTask):
    """The pretraining step (trainer contract, docs/design.md §7.4) on batches of
    :func:`make_batch_fn`."""

    def update_in_place(model, optimizer, t):
        def loss_fn(m):
            parts = losses(m(t["image"]), t)
            return sum(task.weights[k] * v for k, v in parts.items()), parts

        (loss, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return {"loss": loss, "grad_norm": optax.global_norm(grads),
                **{f"loss/{k}": v for k, v in parts.items()}}

    def arrays(batch, rng=None):
        return ({k: jnp.asarray(batch[k]) for k in _TARGET_KEYS},)

    def check(model):
        if not isinstance(model, ScenesEncoder):
            raise ValueError("the scenes encoder step trains a ScenesEncoder")

    return steps.update_step(update_in_place, arrays, check=check)


def grey_choice(seed: int, step: int, batch_size: int, fraction: float) -> np.ndarray:
    """bool [B]: which images of step ``step`` are given grey (a pure function of seed, step)."""
    return np.random.default_rng([int(seed), int(step), 0x6E7]).random(batch_size) < fraction


def make_batch_fn(task: EncoderTask, loader, seed: int):
    def batch_fn(step: int) -> dict[str, np.ndarray]:
        b = loader.batch(step)
        return task.targets(b, grey_choice(seed, step, len(b["image"]), task.grey_fraction))

    return batch_fn


@nnx.jit
def _predict(model: ScenesEncoder, images: jax.Array) -> dict[str, jax.Array]:
    return model(images)


def scores(logits: Mapping[str, np.ndarray], t: Mapping[str, np.ndarray], num_things: int
           ) -> dict[str, float]:
    """Per-patch accuracies: ``semantic_acc`` (argmax against the patch's majority category;
    ``thing_semantic_acc`` on the patches whose majority is a thing class), ``shape_acc`` (the
    shape head's thing class, on patches at least half thing: the shape read), ``colour_acc``
    (the same patches, colour inputs), ``centre_acc`` (on patches holding a box centre: class
    right) and ``centre_false`` (share of the other patches given a centre)."""
    truth = np.argmax(t["semantic"], -1)
    sem_ok = np.argmax(logits["semantic"], -1) == truth
    thing = (truth >= 1) & (truth <= num_things)
    mostly = t["colour_weight"] >= 0.5
    mostly_thing = t["thing_weight"] >= 0.5
    shape_ok = np.argmax(logits["shape"], -1) == np.argmax(t["shape"], -1)
    col_ok = np.argmax(logits["colour"], -1) == np.argmax(t["colour"], -1)
    pred_c, has = np.argmax(logits["centre"], -1), t["centre"] > 0
    out = {"semantic_acc": float(np.mean(sem_ok)),
           "thing_semantic_acc": float(np.mean(sem_ok[thing])) if thing.any() else 0.0,
           "shape_acc": float(np.mean(shape_ok[mostly_thing])) if mostly_thing.any() else 0.0,
           "centre_acc": float(np.mean(pred_c[has] == t["centre"][has])) if has.any() else 0.0,
           "centre_false": float(np.mean(pred_c[~has] > 0))}
    if mostly.any():
        out["colour_acc"] = float(np.mean(col_ok[mostly]))
    return out


def make_evaluator(task: EncoderTask, val):
    """``fn(model, step) -> metrics``: losses and :func:`scores` on the validation images in
    colour and (prefix ``grey_``) all grey."""
    colour = task.targets(val.batch)
    grey = tg.greyed(colour)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        out = {}
        for prefix, t in (("", colour), ("grey_", grey)):
            logits = {k: np.asarray(v) for k, v in _predict(model, jnp.asarray(t["image"])).items()}
            parts = losses(logits, t)
            out |= {f"{prefix}loss/{k}": float(v) for k, v in parts.items()
                    if not (prefix and k == "colour")}
            out |= {f"{prefix}{k}": v for k, v in scores(logits, t, task.num_things).items()
                    if not (prefix and k == "colour_acc")}
        return out

    return evaluate


def build(cfg: Any, task: EncoderTask) -> ScenesEncoder:
    return ScenesEncoder(cfg.model, task.sizes, rngs=nnx.Rngs(cfg.run.seed))


RECIPE = Recipe(name="scenes_encoder", make_task=make_task, make_batch_fn=make_batch_fn,
                make_evaluator=make_evaluator, build=build,
                make_step=lambda cfg, task: make_step(task))
"""Pretraining of the shared encoder (``python -m rlcv_lib pretrain scenes_encoder cpu``)."""
