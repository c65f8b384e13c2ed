"""Colorization (UViM, the paper's Figure 1c) on the scenes world: the task's config and its
presets of the shared sections, its grey input, and stage I of its UViM model
(``STAGE1_RECIPE``); stage II is :mod:`rlcv_lib.tasks.colorization.pretrain`.

The input is the image's luma replicated to three channels; the target its colour. Both live on
[−1, 1] in stage I, as in UViM's released colorization (docs/design.md §10.2)::

    scenes batch image  float [B,H,W,3] on [0, 1]
    -> stage I batch    {"image": grey on [−1, 1] ×3 channels (context), "rgb": colour on [−1, 1]}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

from rlcv_lib import models
from rlcv_lib.config import ConfigError, tuning_field
from rlcv_lib.core import train as train_lib
from rlcv_lib.data import palette
from rlcv_lib.models.vqvae import VQVAE_PRESETS, VQVAEConfig
from rlcv_lib.tasks.colorization.reward import colourfulness
from rlcv_lib.tasks.uvim import stage1

LUMA_WEIGHTS = {"bt601": tuple(float(w) for w in palette.LUMA),
                "tf": (0.2989, 0.5870, 0.1140)}
"""Grey conversions: ITU-R BT.601, the scenes palette's (objects of one grey level share their
luma exactly under it), and TensorFlow's ``rgb_to_grayscale``, UViM's (the ``paper`` preset)."""


@dataclasses.dataclass(frozen=True)
class ColorizationConfig:
    """The colorization task."""

    luma: Literal["bt601", "tf"] = "bt601"
    """The grey conversion of the input (:data:`LUMA_WEIGHTS`)."""
    val_size: int = tuning_field(256)
    """Validation scenes of the tuning curve and the checkpoint choice."""
    guard_luma_psnr: float = tuning_field(32.0)
    """The guarded run's reward: colourfulness − ``guard_weight`` × max(0, this − the decoded
    image's luma PSNR against the grey input, in dB): a colourizer that changes the image it
    was given pays for every dB below this."""
    guard_weight: float = tuning_field(0.5)
    """Colourfulness lost per dB of luma PSNR below ``guard_luma_psnr`` (the guarded run).
    Both guard values were chosen on validation
    (``experiments/colorization_tuning_probe.py``, notes/colorization.md)."""
    select_luma_drop: float = tuning_field(1.0)
    """The checkpoint choice keeps only evaluations whose validation luma PSNR is at most this
    many dB below the MLE model's and whose in-palette rate is not below its; among them the
    most colourful (temperature-1 samples) wins, the MLE model (step 0) included."""
    in_palette_tolerance: float = tuning_field(0.15)
    """A decoded pixel is in palette when it lies within this distance (RGB on [−1, 1]) of a
    colour its region can be drawn in at its luma (:func:`~rlcv_lib.tasks.colorization.
    references.palette_distance`; chosen on validation scenes by
    ``experiments/colorization_palette_tolerance.py``: the truth's pixels lie within it, the
    dull bound's mostly do not)."""
    mle_as_long: bool = tuning_field(True)
    """Run the control "MLE trained on for as long as the plain tuning took"."""
    shown: int = tuning_field(6)
    """Test images in the before/after figure."""

    def __post_init__(self) -> None:
        if self.luma not in LUMA_WEIGHTS:
            raise ConfigError(f"invalid ColorizationConfig: luma={self.luma!r}; choose one of "
                              f"{sorted(LUMA_WEIGHTS)}")
        for name in ("val_size", "shown"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid ColorizationConfig: {name} must be >= 1, got "
                                  f"{getattr(self, name)}")
        for name in ("guard_weight", "select_luma_drop", "in_palette_tolerance"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"invalid ColorizationConfig: {name} must be >= 0, got "
                                  f"{getattr(self, name)}")


COLORIZATION_PRESETS: dict[str, ColorizationConfig] = {
    "smoke": ColorizationConfig(val_size=8, shown=3),
    "cpu": ColorizationConfig(),
    "gpu": ColorizationConfig(),
    "paper": ColorizationConfig(luma="tf"),
}

MODEL_PRESETS: dict[str, models.ModelConfig] = {
    **models.MODEL_PRESETS,
    "cpu": dataclasses.replace(models.MODEL_SIZES["cpu"], encoder_init="shipped"),
    "paper": models.MODEL_SIZES["vit_l16_pan256"]}
"""Stage II's ``model`` section per preset: the shared sizes; at ``cpu`` its encoder starts from
the shipped scenes encoder (docs/design.md §4.3; it was trained with a grey share of its images
for this input); at ``paper`` UViM's stage II (ViT-L/16 encoder, 24-layer decoder, 512²)."""

TRAIN_PRESETS: dict[str, train_lib.TrainConfig] = {
    **train_lib.TRAIN_PRESETS,
    "cpu": dataclasses.replace(train_lib.TRAIN_PRESETS["cpu"], num_steps=4000, eval_every=500)}
"""Stage II's MLE ``train`` section per preset (the cpu run's length: notes/colorization.md)."""

TUNE_PRESETS: dict[str, train_lib.TrainConfig] = {
    **train_lib.TUNE_PRESETS,
    "cpu": dataclasses.replace(train_lib.TUNE_PRESETS["cpu"], batch_size=16, num_steps=600,
                               eval_every=100, ckpt_every=100)}
"""Colorization's ``tune`` section per preset. cpu: 600 updates of 16 grey images ×
``rl.num_samples`` at lr 1e-4 (the shared cpu value), evaluated every 100."""

VQVAE_COLOUR_PRESETS: dict[str, VQVAEConfig] = {
    name: dataclasses.replace(cfg, targets=(("rgb", 3),)) for name, cfg in VQVAE_PRESETS.items()}
"""The ``vqvae`` section for colorization: one RGB target."""


def grey(images: np.ndarray, luma: str = "bt601") -> np.ndarray:
    """float [..., H, W, 3] -> its grey level replicated to three channels (same range)."""
    w = np.asarray(LUMA_WEIGHTS[luma], np.float32)
    g = np.asarray(images, np.float32) @ w
    return np.repeat(g[..., None], 3, axis=-1)


def stage1_batch(batch: Mapping[str, np.ndarray], luma: str = "bt601") -> dict[str, np.ndarray]:
    """A scenes batch -> the stage I batch (module docstring)."""
    image = np.asarray(batch["image"], np.float32)
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"batch['image'] must be [B,H,W,3] RGB, got {image.shape}")
    return {"image": grey(image, luma) * 2 - 1, "rgb": image * 2 - 1}


def psnr(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB [B] of images on [−1, 1] (peak-to-peak 2, UViM's evaluator);
    ``pred`` is clipped to the range first. Identical images give inf."""
    pred = np.clip(pred, -1, 1)
    mse = np.mean((pred - truth) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(4.0 / mse)


def stage1_metrics(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]
                   ) -> dict[str, float]:
    """Stage I's reconstruction quality: mean PSNR against the colour truth, and the mean
    colourfulness of the (clipped) reconstruction beside the truth's."""
    pred = np.clip(outputs["rgb"], -1, 1)
    return {"psnr": float(np.mean(psnr(pred, batch["rgb"]))),
            "colourfulness": float(np.mean(colourfulness(pred))),
            "colourfulness_truth": float(np.mean(colourfulness(batch["rgb"])))}


def make_stage1_task(cfg, cache_dir: str | None = None) -> stage1.Stage1Task:
    """Stage I of ``cfg`` (its ``vqvae`` section with the RGB target)."""
    if cfg.vqvae.targets != (("rgb", 3),):
        raise ValueError(f"colorization's stage I has one target ('rgb', 3), got "
                         f"vqvae.targets={cfg.vqvae.targets}")
    if cfg.vqvae.image_size != cfg.world.image_size:
        raise ValueError(f"vqvae.image_size={cfg.vqvae.image_size} differs from "
                         f"world.image_size={cfg.world.image_size}")
    luma = cfg.colorization.luma
    return stage1.Stage1Task(name="colorization", vqvae=cfg.vqvae, losses={"rgb": "l2"},
                             make_batch=lambda batch: stage1_batch(batch, luma),
                             metrics=stage1_metrics)


STAGE1_RECIPE = stage1.make_recipe("colorization", make_stage1_task)
"""Stage I pretraining of colorization (``python -m rlcv_lib pretrain colorization cpu``)."""
