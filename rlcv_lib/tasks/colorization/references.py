"""Reference rows of colorization on the scenes world: what the colourfulness of a colourizer
means beside the truth, a dull bound and the in-palette ceiling (issue 19), and the recoloured
truth that a colour-fidelity judge compares against.

Every function works region by region: a *region* is one annotated segment of the panoptic map
(a thing instance or a stuff region); void pixels (id 0: parts too small to annotate) are left as
they are in every output. A region is recoloured **at its own luma**: each pixel keeps its BT.601
grey ``Y`` and takes a chroma ``c`` (``c @ LUMA = 0``) as ``Y + s·c``, ``s ≤ 1`` shrunk per pixel
only where the colour would leave [0, 1] (:func:`rlcv_lib.data.scenes.stuff_rgb`), so the grey
image of every output is the input's. The colours a region can take are the ones the world draws
for it (:func:`region_palette`), with the world's draw probabilities:

* a **thing** at grey level ``L`` (the palette level nearest its pixels' median luma): the
  palette colours of level ``L``, vivid (weight 1 − ``muted_prob``), muted (``muted_prob``) and
  neutral (``neutral_weight``);
* a **stuff** region: its class's chromas in this world (:func:`rlcv_lib.data.scenes.
  stuff_chroma`: the ``stuff_hues``, or the class's own colour family), equally likely.

The rows (images float [B,H,W,3] on [−1, 1], ``panoptic`` int [B,H,W], ``segments`` the scene
annotations' segment lists, ``world`` the :class:`~rlcv_lib.data.scenes.WorldConfig`):

* **truth**: the images themselves (their colourfulness: :func:`colourfulness_rows`).
* **dull bound** (:func:`dull_bound`): every region at the *expected* colour of its draw, pixel
  by pixel ``Σ_c p_c · (Y + s·c)``: what an honest model outputs that knows each region's luma
  and class (it can see shape and texture) but not which colour was drawn, the mean over the
  world's draws; it cannot be told from the truth in the grey input, so an MLE colourizer drifts
  towards it.
* **best in-palette recolouring** (:func:`best_recolouring`): every region in one of its
  drawable colours, the combination that maximises the image's colourfulness; searched
  exhaustively when the image has at most ``exhaustive_limit`` combinations, else by coordinate
  ascent (each region in turn takes its best colour given the others, until none changes) from
  ``restarts`` starts, the first with every region at its most chromatic colour and the rest
  random: the in-distribution ceiling (a colourizer beyond it leaves the palette).
* **recoloured truth** (:func:`recolour`): every region's colour redrawn from the world's
  distribution: a truth as plausible as the real one, the reference of a colour-PSNR judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlcv_lib.data import palette, scenes
from rlcv_lib.tasks.colorization.reward import CHROMA_WEIGHT, colourfulness


def _check(images: np.ndarray, panoptic: np.ndarray, segments: Sequence[Any]) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B,H,W,3], got shape {images.shape}")
    if panoptic.shape != images.shape[:3]:
        raise ValueError(f"panoptic must be [B,H,W] = {images.shape[:3]}, got {panoptic.shape}")
    if len(segments) != len(images):
        raise ValueError(f"segments must hold one list per image ({len(images)}), got "
                         f"{len(segments)}")


def thing_level(grey: np.ndarray) -> float:
    """The palette grey level nearest the median of a thing's pixel lumas ``grey`` [N] on
    [0, 1] (its rim and noise leave the median at its colour's level)."""
    levels = np.asarray(palette.GREY_LEVELS)
    return float(levels[np.argmin(np.abs(levels - np.median(grey)))])


def region_palette(world: scenes.WorldConfig, segment: dict[str, Any],
                   grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chroma float [C,3], probability float [C]): the colours ``world`` draws for the region of
    ``segment`` (a COCO panoptic segment dict) whose pixel lumas are ``grey`` [N] on [0, 1]
    (module docstring). Colours of zero probability are left out."""
    n_things = len(world.thing_classes)
    if not segment["isthing"]:
        name = world.stuff_classes[segment["category_id"] - n_things - 1]
        chroma = scenes.stuff_chroma(world, name)
        return chroma, np.full(len(chroma), 1 / len(chroma))
    at = np.flatnonzero(palette.COLOR_LEVEL == thing_level(grey))
    chroma, weight = [], []
    for i in at:
        c = palette.COLOR_RGB[i] - palette.COLOR_LEVEL[i]
        if not palette.COLOR_IS_VIVID[i]:
            chroma.append(np.zeros(3, np.float32))
            weight.append(world.neutral_weight)
            continue
        for scale, w in ((1.0, 1 - world.muted_prob), (palette.MUTED_SATURATION,
                                                       world.muted_prob)):
            chroma.append(scale * c)
            weight.append(w)
    chroma, weight = np.asarray(chroma, np.float32), np.asarray(weight, np.float64)
    keep = weight > 0
    return chroma[keep], weight[keep] / weight[keep].sum()


def _regions(image: np.ndarray, pan: np.ndarray, segs: Sequence[dict[str, Any]],
             world: scenes.WorldConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]]:
    """Per annotated region: (pixel indices into the flat image [N], lumas [N] on [0, 1],
    chroma [C,3], probability [C])."""
    rgb01 = (image.reshape(-1, 3).astype(np.float32) + 1) / 2
    grey = rgb01 @ palette.LUMA
    flat = pan.reshape(-1)
    out = []
    for s in segs:
        idx = np.flatnonzero(flat == s["id"])
        if len(idx):
            out.append((idx, grey[idx], *region_palette(world, s, grey[idx])))
    return out


def _at(y: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """[N,3] on [−1, 1]: lumas ``y`` [N] (on [0, 1]) in ``chroma`` [3]."""
    return 2 * scenes.stuff_rgb(y, chroma) - 1


def dull_bound(images: np.ndarray, panoptic: np.ndarray, segments: Sequence[Any],
               world: scenes.WorldConfig) -> np.ndarray:
    """float32 [B,H,W,3] on [−1, 1]: every region at the expected colour of the world's draw
    for it, pixel by pixel (module docstring)."""
    images, panoptic = np.asarray(images), np.asarray(panoptic)
    _check(images, panoptic, segments)
    out = images.astype(np.float32).reshape(len(images), -1, 3).copy()
    for b in range(len(images)):
        for idx, y, chroma, p in _regions(images[b], panoptic[b], segments[b], world):
            out[b, idx] = sum(pc * _at(y, c) for c, pc in zip(chroma, p, strict=True))
    return out.reshape(images.shape)


def recolour(images: np.ndarray, panoptic: np.ndarray, segments: Sequence[Any],
             world: scenes.WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """float32 [B,H,W,3] on [−1, 1]: every region's colour redrawn from the world's
    distribution (``rng``), at its own luma (module docstring)."""
    images, panoptic = np.asarray(images), np.asarray(panoptic)
    _check(images, panoptic, segments)
    out = images.astype(np.float32).reshape(len(images), -1, 3).copy()
    for b in range(len(images)):
        for idx, y, chroma, p in _regions(images[b], panoptic[b], segments[b], world):
            out[b, idx] = _at(y, chroma[rng.choice(len(p), p=p)])
    return out.reshape(images.shape)


def opponent_sums(x: np.ndarray) -> np.ndarray:
    """[5]: (pixels, Σrg, Σyb, Σrg², Σyb²) of RGB pixels ``x`` [N,3] on [−1, 1]."""
    x = x.astype(np.float64)
    rg, yb = x[:, 0] - x[:, 1], 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    return np.array([len(x), rg.sum(), yb.sum(), (rg * rg).sum(), (yb * yb).sum()])


def m_of_sums(total: np.ndarray) -> np.ndarray:
    """Colourfulness from summed :func:`opponent_sums` ``total`` [..., 5] -> [...]."""
    n = total[..., 0]
    mu = total[..., 1:3] / n[..., None]
    var = np.maximum(total[..., 3:5] / n[..., None] - mu ** 2, 0)
    return np.sqrt(var.sum(-1)) + CHROMA_WEIGHT * np.sqrt((mu ** 2).sum(-1))


def best_assignment(fixed: np.ndarray, options: Sequence[np.ndarray], rng: np.random.Generator,
                    restarts: int = 8, exhaustive_limit: int = 4096
                    ) -> tuple[list[int], bool]:
    """(one option index per region, whether the search was exhaustive): the choice maximising
    the colourfulness of ``fixed`` [5] plus each region's chosen row of ``options[r]`` [C_r, 5]
    (summed :func:`opponent_sums`). Exhaustive if ``Π C_r <= exhaustive_limit``, else coordinate
    ascent from ``restarts`` starts (module docstring)."""
    sizes = [len(o) for o in options]
    if not options:
        return [], True
    if np.prod(sizes, dtype=np.float64) <= exhaustive_limit:
        total = fixed
        for o in options:  # total [C_1, ..., C_r, 5]
            total = total[..., None, :] + o.reshape((1,) * (total.ndim - 1) + o.shape)
        return [int(i) for i in np.unravel_index(np.argmax(m_of_sums(total)), sizes)], True
    chromatic = [int(np.argmax(o[:, 3] + o[:, 4])) for o in options]
    starts = [chromatic] + [[int(rng.integers(c)) for c in sizes] for _ in range(restarts - 1)]
    best, best_m = chromatic, -np.inf
    for choice in starts:
        choice = list(choice)
        total = fixed + sum(o[c] for o, c in zip(options, choice, strict=True))
        changed = True
        while changed:
            changed = False
            for r, o in enumerate(options):
                rest = total - o[choice[r]]
                c = int(np.argmax(m_of_sums(rest + o)))
                if m_of_sums(rest + o[c]) > m_of_sums(total) + 1e-12:
                    choice[r], total, changed = c, rest + o[c], True
        if m_of_sums(total) > best_m:
            best, best_m = choice, m_of_sums(total)
    return best, False


def best_recolouring(images: np.ndarray, panoptic: np.ndarray, segments: Sequence[Any],
                     world: scenes.WorldConfig, rng: np.random.Generator | None = None,
                     restarts: int = 8, exhaustive_limit: int = 4096
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [B,H,W,3] on [−1, 1], bool [B] whether each search was exhaustive): every
    region in the drawable colour that, with the others', maximises the image's colourfulness
    (module docstring; ``rng`` seeds the random restarts, default seed 0)."""
    images, panoptic = np.asarray(images), np.asarray(panoptic)
    _check(images, panoptic, segments)
    rng = np.random.default_rng(0) if rng is None else rng
    out = images.astype(np.float32).reshape(len(images), -1, 3).copy()
    exact = np.zeros(len(images), bool)
    for b in range(len(images)):
        regions = _regions(images[b], panoptic[b], segments[b], world)
        void = np.ones(out.shape[1], bool)
        for idx, *_ in regions:
            void[idx] = False
        recoloured = [[_at(y, c) for c in chroma] for _, y, chroma, _ in regions]
        options = [np.stack([opponent_sums(x) for x in r]) for r in recoloured]
        choice, exact[b] = best_assignment(opponent_sums(out[b, void]), options, rng, restarts,
                                           exhaustive_limit)
        for (idx, *_), r, c in zip(regions, recoloured, choice, strict=True):
            out[b, idx] = r[c]
    return out.reshape(images.shape), exact


def colourfulness_rows(rows: dict[str, np.ndarray]) -> dict[str, float]:
    """``{row: mean colourfulness on [−1, 1]}`` of each batch of images [B,H,W,3] in ``rows``."""
    return {k: float(colourfulness(np.asarray(v, np.float64)).mean()) for k, v in rows.items()}


def palette_distance(pred: np.ndarray, images: np.ndarray, panoptic: np.ndarray,
                     segments: Sequence[Any], world: scenes.WorldConfig) -> np.ndarray:
    """float32 [B,H,W]: per pixel, the Euclidean distance (RGB on [−1, 1]) of ``pred`` to the
    nearest colour that its region can be drawn in (:func:`region_palette`) at the pixel's luma
    in the truth ``images``; NaN on void pixels (no region). The in-palette judge reads it."""
    pred, images, panoptic = np.asarray(pred), np.asarray(images), np.asarray(panoptic)
    _check(images, panoptic, segments)
    if pred.shape != images.shape:
        raise ValueError(f"pred must be {images.shape} like the truth, got {pred.shape}")
    out = np.full(panoptic.reshape(len(images), -1).shape, np.nan, np.float32)
    flat = pred.reshape(len(images), -1, 3).astype(np.float32)
    for b in range(len(images)):
        for idx, y, chroma, _ in _regions(images[b], panoptic[b], segments[b], world):
            d = np.stack([np.linalg.norm(flat[b, idx] - _at(y, c), axis=-1) for c in chroma])
            out[b, idx] = d.min(0)
    return out.reshape(panoptic.shape)


def in_palette_rate(distance: np.ndarray, tolerance: float) -> np.ndarray:
    """float [B]: the share of each image's annotated pixels (non-NaN ``distance`` [B,H,W])
    within ``tolerance`` of their region's palette (NaN for an image without one)."""
    d = np.asarray(distance).reshape(len(distance), -1)
    valid = ~np.isnan(d)
    with np.errstate(invalid="ignore"):
        return np.where(valid & (np.nan_to_num(d, nan=np.inf) <= tolerance), 1.0, 0.0).sum(1) \
            / valid.sum(1)


NEUTRAL = "neutral"
"""The hue class of a pixel whose chroma is below ``min_chroma`` (:func:`hue_shares`)."""


def hue_shares(images: np.ndarray, min_chroma: float = 0.1) -> dict[str, float]:
    """``{hue: share of all pixels}`` of images [B,H,W,3] on [−1, 1]: each pixel's chroma (its
    colour minus its BT.601 grey, on [−1, 1]) is :data:`NEUTRAL` when shorter than
    ``min_chroma``, else the vivid palette hue whose chroma points most nearly its way (largest
    cosine). A colour-diversity judge: a colourizer that paints everything in one or two hues
    has most of its pixels in them, whatever their saturation."""
    x = np.asarray(images, np.float32).reshape(-1, 3)
    chroma = x - (x @ palette.LUMA)[:, None]
    vivid = [i for i, v in enumerate(palette.COLOR_IS_VIVID) if v]
    names = [palette.COLOR_NAMES[i] for i in vivid]
    hues = palette.COLOR_RGB[vivid] - palette.COLOR_LEVEL[vivid, None]  # [V,3] on [0, 1]
    hues = hues / np.linalg.norm(hues, axis=1, keepdims=True)
    norm = np.linalg.norm(chroma, axis=1)
    hue = np.argmax(chroma @ hues.T, axis=1)
    counts = np.bincount(np.where(norm < min_chroma, len(names), hue), minlength=len(names) + 1)
    return dict(zip([*names, NEUTRAL], (counts / max(len(x), 1)).tolist(), strict=True))


def entropy_bits(shares: dict[str, float]) -> float:
    """Entropy in bits of a distribution ``{name: share}`` (zero shares count nothing)."""
    p = np.asarray([v for v in shares.values() if v > 0], np.float64)
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0
