"""Panoptic segmentation (UViM, the paper's Figure 1b) on the scenes world: the task's config,
the stage I targets and their inverse, and stage I of its UViM model (``STAGE1_RECIPE``).

Stage I's targets are two one-hot channels, as in UViM's release (docs/design.md §10.2)::

    scenes batch  image [B,H,W,3] on [0, 1], panoptic int [B,H,W] (segment ids, 0 = void),
                  seg_id / seg_category / seg_area [B,Q] (category 0 = padding)
    -> stage I batch
       image      float [B,H,W,3]    the RGB image on [−1, 1] (the context)
       semantics  float [B,H,W,C+1]  one-hot of category (1..C), 0 = void
       instances  float [B,H,W,N+1]  one-hot of the instance id (1..N), 0 = void
       gt_map int [B,H,W], gt_category int [B,Q], gt_crowd bool [B,Q], gt_area float [B,Q]:
                  the full ground truth in :func:`~rlcv_lib.tasks.panoptic.reward.per_image_pq`'s
                  format (segment k of the map is entry k-1 of the tables)

C is the world's number of categories (``scenes.categories``), N = ``panoptic.max_instances``.

**Instance ids** run over all segments, stuff included, in canonical order: by each segment's
centre of mass in raster order (mean row, then mean column; equal centres keep the order of the
segment list). **Overflow**: a ground truth with more than N segments keeps ids 1..N for the
first N in that order; the rest become void (0) in the instance channel, while the semantic
channel keeps their category. Decoding such a target gives those pixels void, so the stage I
oracle loses them (false negatives against the full ground truth); the big_vision release
instead one-hots them to all-zero rows.

**Ground-truth areas** are the pixel counts of ``gt_map`` at the batch's resolution (at the
scenes' native size equal to the segment infos' areas; a resized map has its own), and a
segment that no pixel of the map shows is dropped from the ground truth.

**Decoding** (:func:`decode_panoptic`, stage II's detokenizer later): a predicted segment is a
predicted instance id (the argmax of the instance logits, 0 = void); its category is the
argmax of the semantic logits summed over its pixels; a segment whose category comes out void
(0) is void. One segment per instance id present, so a stuff region split across two ids gives
two segments. No crowd in the scenes world: ``gt_crowd`` is the batch's ``seg_iscrowd`` when it
has one, else all False.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

from rlcv_lib import models
from rlcv_lib.config import ConfigError, added_field, tuning_field
from rlcv_lib.core import train as train_lib
from rlcv_lib.data import adapters, scenes
from rlcv_lib.models.vqvae import VQVAE_PRESETS, VQVAEConfig
from rlcv_lib.tasks.panoptic import reward
from rlcv_lib.tasks.uvim import stage1


@dataclasses.dataclass(frozen=True)
class PanopticConfig:
    """The panoptic task."""

    max_instances: int = 8
    """N, the instance channel's ids 1..N (UViM: 100 channels with void, so N = 99); segments
    beyond the first N in canonical order are void in the instance target (module docstring)."""
    categories: Literal["world", "coco"] = added_field("world")
    """Where the categories come from (:func:`categories`): ``world``, the scenes world's
    things and stuff; ``coco``, COCO panoptic's 133 (80 things then 53 stuff, in the order of
    TFDS ``coco/2017_panoptic``'s labels, which the adapter numbers 1..133)."""
    val_size: int = tuning_field(256)
    """Validation scenes of the tuning curve, the checkpoint choice and the area filter's
    threshold."""
    size_edges: tuple[float, float] = tuning_field((0.01, 0.05))
    """Predicted segments are ``small`` below the first fraction of the image's area, ``large``
    from the second, ``medium`` between (:mod:`~rlcv_lib.tasks.panoptic.judges`)."""
    min_area_candidates: tuple[int, ...] = tuning_field((0, 4, 8, 16, 32, 64, 128))
    """Pixel thresholds of the control "MLE with a minimum-segment-area filter"; the one with
    the best validation PQ of the MLE model's greedy decoding is used on test."""
    mle_as_long: bool = tuning_field(True)
    """Run the control "MLE trained on for as long as tuning took"."""
    shown: int = tuning_field(6)
    """Test images in the before/after figure."""

    def __post_init__(self) -> None:
        bad = []
        if self.categories not in ("world", "coco"):
            bad.append(f"categories must be 'world' or 'coco', got {self.categories!r}")
        if self.max_instances < 1:
            bad.append(f"max_instances must be >= 1, got {self.max_instances}")
        for name in ("val_size", "shown"):
            if getattr(self, name) < 1:
                bad.append(f"{name} must be >= 1, got {getattr(self, name)}")
        lo_hi = tuple(self.size_edges)
        if len(lo_hi) != 2 or not 0 < lo_hi[0] < lo_hi[1] < 1:
            bad.append(f"size_edges must be two fractions 0 < small < large < 1, got {lo_hi}")
        if not self.min_area_candidates or min(self.min_area_candidates) < 0:
            bad.append(f"min_area_candidates must be pixel counts >= 0, got "
                       f"{tuple(self.min_area_candidates)}")
        if bad:
            raise ConfigError("invalid PanopticConfig: " + "; ".join(bad))


PANOPTIC_PRESETS: dict[str, PanopticConfig] = {
    # at least max_objects + max_stuff_regions of each preset's world: no overflow there
    "smoke": PanopticConfig(max_instances=10, val_size=8, shown=3),
    "cpu": PanopticConfig(max_instances=8),
    "gpu": PanopticConfig(max_instances=24),
    # UViM's release: 133 COCO categories + void, 100 instance channels (void + 99 ids)
    "paper": PanopticConfig(max_instances=99, categories="coco"),
}

MODEL_PRESETS: dict[str, models.ModelConfig] = {
    **models.MODEL_PRESETS,
    "cpu": dataclasses.replace(models.MODEL_SIZES["cpu"], encoder_init="shipped"),
    "paper": models.MODEL_SIZES["vit_l16_pan256"]}
"""Stage II's ``model`` section per preset: the shared sizes; at ``cpu`` its encoder starts from
the shipped scenes encoder (docs/design.md §4.3); at ``paper`` UViM's stage II (ViT-L/16
encoder, 24-layer decoder, 512²)."""

TRAIN_PRESETS: dict[str, train_lib.TrainConfig] = {
    **train_lib.TRAIN_PRESETS,
    "cpu": dataclasses.replace(train_lib.TRAIN_PRESETS["cpu"], num_steps=4000, eval_every=500)}
"""Stage II's MLE ``train`` section per preset (cpu: as colorization's stage II)."""

TUNE_PRESETS: dict[str, train_lib.TrainConfig] = {
    **train_lib.TUNE_PRESETS,
    "cpu": dataclasses.replace(train_lib.TUNE_PRESETS["cpu"], batch_size=16, num_steps=600,
                               eval_every=100, ckpt_every=100)}
"""Panoptic's ``tune`` section per preset. cpu: 600 updates of 16 images × ``rl.num_samples``
at lr 1e-4 (the shared cpu value), evaluated every 100 (as colorization's)."""


COCO_THINGS = adapters.DATASETS["coco/2017_panoptic"]["num_things"]
COCO_STUFF = 53
"""COCO panoptic's categories: 80 things (the adapter's count), then 53 stuff (TFDS
``coco/2017_panoptic``'s 133 labels)."""


def categories(world: scenes.WorldConfig, cfg: PanopticConfig) -> list[dict]:
    """The COCO-style category dicts (``id``, ``name``, ``isthing``, ...) of the task: the
    scenes world's, or COCO panoptic's (``panoptic.categories``). TFDS gives COCO's labels
    without names, so those are named by label (``coco_label_<i>``, id i + 1); panopticapi
    reads only ids and ``isthing``."""
    if cfg.categories == "world":
        return scenes.categories(world)
    return [{"id": i + 1, "name": f"coco_label_{i}", "supercategory": "coco",
             "isthing": int(i < COCO_THINGS), "color": [0, 0, 0]}
            for i in range(COCO_THINGS + COCO_STUFF)]


def num_semantic_channels(world: scenes.WorldConfig, cfg: PanopticConfig) -> int:
    """C + 1: the task's categories and void (0)."""
    return len(categories(world, cfg)) + 1


def panoptic_targets(world: scenes.WorldConfig, cfg: PanopticConfig
                     ) -> tuple[tuple[str, int], ...]:
    """The ``vqvae.targets`` of panoptic stage I: semantics (C + 1) and instances (N + 1)."""
    return (("semantics", num_semantic_channels(world, cfg)),
            ("instances", cfg.max_instances + 1))


VQVAE_PANOPTIC_PRESETS: dict[str, VQVAEConfig] = {
    name: dataclasses.replace(cfg, targets=panoptic_targets(scenes.WORLD_PRESETS[name],
                                                            PANOPTIC_PRESETS[name]))
    for name, cfg in VQVAE_PRESETS.items()}
"""The ``vqvae`` section for panoptic: the two one-hot targets sized from each preset's
categories and ``max_instances`` (``paper``: 134 and 100 channels, the release's, so that its
stage I file loads: :mod:`rlcv_lib.tasks.uvim.released`)."""


# ---------------------------------------------------------------------------------------------
# Targets and their inverse.


def ground_truth(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A scenes batch's panoptic annotation in ``reward.per_image_pq``'s format: ``gt_map``
    int32 [B,H,W] (segment k = entry k-1 of the tables below, 0 = void: also pixels whose id is
    in no segment info), ``gt_category`` int32 [B,Q], ``gt_crowd`` bool [B,Q], ``gt_area``
    float64 [B,Q] (pixel counts of ``gt_map``). A segment info whose segment has no pixel in the
    map (e.g. lost in resizing) gets category 0: no ground truth to find."""
    for key in ("panoptic", "seg_id", "seg_category"):
        if key not in batch:
            raise KeyError(f"a scenes batch for panoptic needs 'panoptic', 'seg_id' and "
                           f"'seg_category'; it lacks {key!r}")
    pan = np.asarray(batch["panoptic"])
    seg_id, cat = np.asarray(batch["seg_id"]), np.asarray(batch["seg_category"], np.int32)
    if pan.ndim != 3 or seg_id.shape != cat.shape or seg_id.ndim != 2 or \
            seg_id.shape[0] != pan.shape[0]:
        raise ValueError(f"panoptic must be [B,H,W] and seg_id, seg_category [B,Q] of the same "
                         f"B, got {pan.shape}, {seg_id.shape}, {cat.shape}")
    if np.any(cat < 0):
        raise ValueError(f"seg_category holds negative categories {np.unique(cat[cat < 0])}")
    b, q = seg_id.shape
    real = cat > 0
    # each pixel's segment position + 1 (0: void or an id no real segment info names)
    match = (pan[:, :, :, None] == seg_id[:, None, None, :]) & real[:, None, None, :]
    gt_map = np.where(match.any(-1), match.argmax(-1) + 1, 0).astype(np.int32)
    crowd = np.asarray(batch.get("seg_iscrowd", np.zeros((b, q), bool)), bool)
    flat = gt_map.reshape(b, -1) + (np.arange(b) * (q + 1))[:, None]
    area = np.bincount(flat.ravel(), minlength=b * (q + 1)).reshape(b, q + 1)[:, 1:]
    real &= area > 0  # a segment no pixel shows at this resolution is not ground truth
    return {"gt_map": gt_map, "gt_category": np.where(real, cat, 0).astype(np.int32),
            "gt_crowd": crowd & real, "gt_area": area.astype(np.float64)}


def canonical_order(seg_map: np.ndarray, num_segments: int) -> np.ndarray:
    """Instance ids int32 [B, K] of the segments 1..K of ``seg_map`` int [B,H,W] (0 = void):
    1.. in raster order of their centres of mass (mean row, then mean column; ties keep the
    segment order); 0 for a segment without pixels."""
    b, h, w = seg_map.shape
    k = num_segments
    flat = seg_map.reshape(b, -1).astype(np.int64) + (np.arange(b) * (k + 1))[:, None]
    rows, cols = np.divmod(np.arange(h * w), w)

    def per_segment(weights):
        return np.bincount(flat.ravel(), np.tile(weights, b), minlength=b * (k + 1)
                           ).reshape(b, k + 1)[:, 1:]

    count = per_segment(np.ones(h * w))
    present = count > 0
    safe = np.where(present, count, 1)
    cy = np.where(present, per_segment(rows) / safe, np.inf)  # absent segments sort last
    cx = np.where(present, per_segment(cols) / safe, np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(k), (b, k)), cx, cy), axis=-1)  # [B,K]
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[None].repeat(b, 0), axis=-1)
    return np.where(present, rank + 1, 0).astype(np.int32)


def one_hot(ids: np.ndarray, depth: int) -> np.ndarray:
    """float32 [..., depth] one-hot of int ``ids`` [...] in 0..depth-1."""
    return (ids[..., None] == np.arange(depth)).astype(np.float32)


def stage1_batch(batch: Mapping[str, np.ndarray], num_categories: int, max_instances: int
                 ) -> dict[str, np.ndarray]:
    """A scenes batch -> the stage I batch (module docstring)."""
    image = np.asarray(batch["image"], np.float32)
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"batch['image'] must be [B,H,W,3] RGB, got {image.shape}")
    if max_instances < 1:
        raise ValueError(f"max_instances must be ≥ 1, got {max_instances}")
    gt = ground_truth(batch)
    if gt["gt_map"].shape != image.shape[:3]:
        raise ValueError(f"panoptic {gt['gt_map'].shape} and image {image.shape} differ in size")
    top = int(gt["gt_category"].max(initial=0))
    if top > num_categories:
        raise ValueError(f"seg_category holds category {top} > num_categories="
                         f"{num_categories}")
    gt_map, b = gt["gt_map"], image.shape[0]
    ids = canonical_order(gt_map, gt["gt_category"].shape[1])  # [B,Q]
    ids = np.where(ids <= max_instances, ids, 0)  # overflow -> void
    pad = np.zeros((b, 1), np.int32)
    semantic = np.take_along_axis(np.concatenate([pad, gt["gt_category"]], 1),
                                  gt_map.reshape(b, -1), 1).reshape(gt_map.shape)
    instance = np.take_along_axis(np.concatenate([pad, ids], 1),
                                  gt_map.reshape(b, -1), 1).reshape(gt_map.shape)
    return {"image": image * 2 - 1, "semantics": one_hot(semantic, num_categories + 1),
            "instances": one_hot(instance, max_instances + 1), **gt}


def decode_panoptic(semantic_logits: np.ndarray, instance_logits: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(``pred_map`` int32 [B,H,W], ``pred_category`` int32 [B,N]) from logits [B,H,W,C+1] and
    [B,H,W,N+1] (module docstring): segment k is the pixels of instance id k, its category the
    argmax of the semantic logits summed over them; 0 in both where void. The input format of
    ``reward.per_image_pq``."""
    sem = np.asarray(semantic_logits, np.float64)
    inst = np.asarray(instance_logits)
    if sem.ndim != 4 or inst.ndim != 4 or sem.shape[:3] != inst.shape[:3]:
        raise ValueError(f"semantic and instance logits must be [B,H,W,C+1] and [B,H,W,N+1] "
                         f"of one B,H,W, got {sem.shape} and {inst.shape}")
    if sem.shape[-1] < 2 or inst.shape[-1] < 2:
        raise ValueError(f"logits need void and at least one class/id, got {sem.shape[-1]} and "
                         f"{inst.shape[-1]} channels")
    b, n = sem.shape[0], inst.shape[-1] - 1
    ids = np.argmax(inst, -1).reshape(b, -1)  # [B,HW]
    flat = (ids + (np.arange(b) * (n + 1))[:, None]).ravel()
    sums = np.stack([np.bincount(flat, sem[..., c].ravel(), minlength=b * (n + 1))
                     for c in range(sem.shape[-1])], -1).reshape(b, n + 1, -1)
    present = np.bincount(flat, minlength=b * (n + 1)).reshape(b, n + 1) > 0
    category = np.where(present, np.argmax(sums, -1), 0)[:, 1:].astype(np.int32)  # [B,N]
    keep = np.concatenate([np.zeros((b, 1), bool), category > 0], 1)  # id 0 is void
    pred_map = np.where(np.take_along_axis(keep, ids, 1), ids, 0)
    return pred_map.reshape(sem.shape[:3]).astype(np.int32), category


def stage1_metrics(outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]
                   ) -> dict[str, float]:
    """Stage I's reconstruction quality: ``pq``, the mean per-image PQ of the decoded outputs
    against the full ground truth (the stage I oracle), and ``semantic_accuracy``, the fraction
    of pixels whose semantic argmax (void included) equals the target's."""
    pred_map, pred_cat = decode_panoptic(outputs["semantics"], outputs["instances"])
    num_categories = batch["semantics"].shape[-1] - 1
    pq = reward.per_image_pq(pred_map, pred_cat, batch["gt_map"], batch["gt_category"],
                             batch["gt_crowd"], batch["gt_area"], num_categories)
    acc = np.mean(np.argmax(outputs["semantics"], -1) == np.argmax(batch["semantics"], -1))
    return {"pq": float(np.mean(pq)), "semantic_accuracy": float(acc)}


def make_stage1_task(cfg, cache_dir: str | None = None) -> stage1.Stage1Task:
    """Stage I of ``cfg`` (its ``vqvae`` section with the two panoptic targets)."""
    want = panoptic_targets(cfg.world, cfg.panoptic)
    if cfg.vqvae.targets != want:
        raise ValueError(f"panoptic's stage I for this world and panoptic.max_instances="
                         f"{cfg.panoptic.max_instances} has targets {want}, got "
                         f"vqvae.targets={cfg.vqvae.targets}")
    if cfg.vqvae.image_size != cfg.world.image_size:
        raise ValueError(f"vqvae.image_size={cfg.vqvae.image_size} differs from "
                         f"world.image_size={cfg.world.image_size}")
    c, n = want[0][1] - 1, cfg.panoptic.max_instances
    return stage1.Stage1Task(name="panoptic", vqvae=cfg.vqvae,
                             losses={"semantics": "xent", "instances": "xent"},
                             make_batch=lambda batch: stage1_batch(batch, c, n),
                             metrics=stage1_metrics)


STAGE1_RECIPE = stage1.make_recipe("panoptic", make_stage1_task)
"""Stage I pretraining of panoptic (``python -m rlcv_lib pretrain panoptic cpu``)."""
