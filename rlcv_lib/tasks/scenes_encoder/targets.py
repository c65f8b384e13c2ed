"""Per-patch targets of the scenes encoder's pretraining, computed from a collated scenes batch.

The encoder turns a ``[B,S,S,3]`` image into one token per ``p × p`` patch (``g = S/p``, ``P =
g²`` tokens). Each token is asked what its patch holds, so that the tokens carry what every task
reads (shape, colour and position; docs/design.md §4.3)::

    semantic  float [B,P,1+T+U]  share of the patch's pixels per category: void (0), the T thing
                                 classes, the U stuff classes (the panoptic category ids)
    shape     float [B,P,T]      share of the patch's *thing* pixels per thing class
    thing_weight float [B,P]     share of the patch's pixels that belong to a thing
    colour    float [B,P,K]      share of the patch's thing pixels per palette colour name
    colour_weight float [B,P]    ``thing_weight``, but 0 on grey inputs (colour is not in them)
    centre    int32 [B,P]        1 + thing class of the thing whose box centre lies in the
                                 patch (the later one where two do), else 0

A thing's colour is the palette colour (vivid or muted mode) nearest to the median of its
interior pixels (those whose four neighbours are its pixels too): things are painted flat, so
that median is the fill up to the sensor noise. A thing that shows no interior is matched
against the darker rims as well (:data:`rlcv_lib.data.scenes.RIM_SHADE`). The truth is derived
from the pixels and the annotations alone, so any scenes source (the in-memory world, its TFDS
copy) gives the same targets.

Grey inputs (``grey`` bool [B]) replace the image by its BT.601 luma on three channels
(:func:`to_grey`) and zero ``colour_weight``: the encoder also learns to read a grey image, what
colorization's stage II sees.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rlcv_lib.data import palette, scenes

NUM_COLOURS = len(palette.COLOR_NAMES)
_FILL = np.concatenate([palette.COLOR_RGB, np.stack([
    palette.thing_rgb(i, True) for i in range(NUM_COLOURS)])])  # [2K,3] vivid, muted modes
_MODES = np.concatenate([_FILL, scenes.RIM_SHADE * _FILL])  # [4K,3] with their rims
_MODE_NAME = np.tile(np.arange(NUM_COLOURS), 4)  # [4K] -> colour name index


def nearest_colour(rgb: np.ndarray, rims: bool = False) -> np.ndarray:
    """Palette colour index int [...] nearest to float RGB [..., 3] on [0, 1] among the fills
    (vivid and muted modes) and, with ``rims``, their rims too."""
    modes = _MODES if rims else _FILL
    d = np.sum((np.asarray(rgb, np.float32)[..., None, :] - modes) ** 2, axis=-1)
    return _MODE_NAME[np.argmin(d, axis=-1)]


def to_grey(images: np.ndarray) -> np.ndarray:
    """float [..., 3] -> its BT.601 luma replicated to three channels (same range)."""
    return np.repeat(palette.luma(images)[..., None], 3, axis=-1)


def _patch_mean(x: np.ndarray, patch: int) -> np.ndarray:
    """[B,S,S,C] -> [B,(S/p)²,C]: the mean over each p × p patch, patches in row-major order."""
    b, s, _, c = x.shape
    g = s // patch
    return x.reshape(b, g, patch, g, patch, c).mean(axis=(2, 4)).reshape(b, g * g, c)


def category_map(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """int32 [B,H,W]: the category id of every pixel (0 = void) from the panoptic map, as
    the panoptic task reads it (:func:`rlcv_lib.tasks.panoptic.task.ground_truth`)."""
    from rlcv_lib.tasks.panoptic.task import ground_truth

    truth = ground_truth(batch)
    segments = truth["gt_map"]  # [B,H,W] segment position + 1, 0 = void
    table = np.pad(truth["gt_category"], ((0, 0), (1, 0)))  # [B,1+Q], void first
    flat = np.take_along_axis(table, segments.reshape(len(segments), -1), axis=1)
    return flat.reshape(segments.shape).astype(np.int32)


def thing_colour_map(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """int32 [B,H,W]: the palette colour of the thing each pixel belongs to, −1 elsewhere."""
    pan, image = np.asarray(batch["panoptic"]), np.asarray(batch["image"], np.float32)
    out = np.full(pan.shape, -1, np.int32)
    for b in range(pan.shape[0]):
        for q in np.flatnonzero(batch["seg_isthing"][b] & (batch["seg_id"][b] > 0)):
            mask = pan[b] == batch["seg_id"][b, q]
            inner = scenes.interior(mask)
            if inner.any():  # the fill, away from the rim (a white rim is nearly grey)
                out[b][mask] = nearest_colour(np.median(image[b][inner], axis=0))
            elif mask.any():
                out[b][mask] = nearest_colour(np.median(image[b][mask], axis=0), rims=True)
    return out


def centre_classes(batch: Mapping[str, np.ndarray], grid: int) -> np.ndarray:
    """int32 [B,g²]: 1 + the class of the thing whose box centre falls in each patch, else 0."""
    b = len(batch["image"])
    out = np.zeros((b, grid * grid), np.int32)
    for i in range(b):
        for k in range(int(batch["num_boxes"][i])):
            y0, x0, y1, x1 = batch["boxes"][i, k]
            r = min(int((y0 + y1) / 2 * grid), grid - 1)
            c = min(int((x0 + x1) / 2 * grid), grid - 1)
            out[i, r * grid + c] = 1 + int(batch["labels"][i, k])
    return out


def patch_targets(batch: Mapping[str, np.ndarray], *, patch: int, num_things: int,
                  num_stuff: int, grey: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The targets of the module docstring for a collated scenes batch (``image`` float on
    [0, 1]) of a world with ``num_things`` thing and ``num_stuff`` stuff classes; ``grey``
    bool [B] marks the images given grey (default: none)."""
    num_categories = 1 + num_things + num_stuff
    image = np.asarray(batch["image"], np.float32)
    b, s = image.shape[:2]
    if image.ndim != 4 or image.shape[2] != s or s % patch:
        raise ValueError(f"batch['image'] must be [B,S,S,3] with S a multiple of patch={patch}, "
                         f"got {image.shape}")
    grey = np.zeros(b, bool) if grey is None else grey
    cats = category_map(batch)
    if cats.max(initial=0) >= num_categories:
        raise ValueError(f"category id {cats.max()} >= num_categories={num_categories}")
    colours = thing_colour_map(batch)
    onehot_cat = np.eye(num_categories, dtype=np.float32)[cats]  # [B,S,S,C]
    onehot_col = np.eye(NUM_COLOURS + 1, dtype=np.float32)[colours + 1][..., 1:]  # −1 -> zeros
    thing_share = _patch_mean(onehot_col.sum(-1, keepdims=True), patch)[..., 0]  # [B,P]
    colour = _patch_mean(onehot_col, patch) / np.maximum(thing_share, 1e-9)[..., None]
    semantic = _patch_mean(onehot_cat, patch)
    shape = semantic[..., 1:1 + num_things] / np.maximum(thing_share, 1e-9)[..., None]
    targets = {"image": image, "semantic": semantic, "shape": shape.astype(np.float32),
               "thing_weight": thing_share.astype(np.float32),
               "colour": colour.astype(np.float32), "colour_weight": thing_share.astype(np.float32),
               "centre": centre_classes(batch, s // patch)}
    return greyed(targets, grey)


def greyed(targets: Mapping[str, np.ndarray], grey: np.ndarray | None = None
           ) -> dict[str, np.ndarray]:
    """``targets`` (of :func:`patch_targets`) with the images ``grey`` (bool [B]; default
    all) given grey: their pixels replaced by luma and their colour targets masked."""
    image = targets["image"]
    grey = np.ones(len(image), bool) if grey is None else np.asarray(grey, bool)
    return {**targets, "image": np.where(grey[:, None, None, None], to_grey(image), image),
            "colour_weight": np.where(grey[:, None], 0.0, targets["colour_weight"]
                                      ).astype(np.float32)}
