"""The scenes world: a procedural dataset for detection, panoptic, colorization and captioning.

One scene is a pure function of ``(config, split, index)`` (NumPy only; no JAX or TFDS import):
"stuff" bands (sky, grass, water, wall, sand) with their own textures and colour families fill
the background; 0..``max_objects`` "things" of several shape classes are painted on top in
named palette colours (:mod:`rlcv_lib.data.palette`), later ones occluding earlier ones.

Conventions (docs/design.md §3.2, §3.3):

* **Example dict**: ``image`` uint8 [H,W,3]; ``image_id`` int; ``boxes`` float32 [K,4]
  normalised ``(ymin, xmin, ymax, xmax)``; ``labels`` int32 [K] (0-based index into
  ``thing_classes``); ``panoptic`` int32 [H,W] segment ids (0 = void); ``segments``: list of
  dicts ``id, category_id, is_thing, isthing, area, bbox, iscrowd``; ``captions``: 5 str.
* **Boxes use pixel edges**: an instance whose visible pixels span rows ``y0..y1`` and columns
  ``x0..x1`` (inclusive) has ``boxes = (y0/H, x0/W, (y1+1)/H, (x1+1)/W)`` and COCO
  ``bbox = [x0, y0, x1-x0+1, y1-y0+1]`` (pycocotools' ``toBbox`` convention). Boxes are the
  tight boxes of the *visible* part, as in COCO.
* **Categories** (COCO layout): things get ids ``1..T`` in ``thing_classes`` order, stuff
  ``T+1..T+S`` in ``stuff_classes`` order; ``labels = category_id - 1`` for things.
* **Minimum visible size**: an instance (or stuff region) with fewer than
  :func:`min_visible_pixels` visible pixels is not annotated anywhere: no box, its pixels are
  void (0) in the panoptic map, and captions do not mention it. One rule for all three.
* **Size buckets** scale with the image: COCO's small/medium/large limits (32², 96² pixels) are
  taken relative to COCO's typical 640×480 image, i.e. small < 0.333% and large ≥ 3% of the
  image area (:func:`area_thresholds`). At 64×64: small < 13.7 px, large ≥ 122.9 px.
  Evaluate with ``COCOeval.params.areaRng = coco_area_ranges(H, W)`` so AP small/medium/
  large mean what they mean on COCO at any resolution.

Difficulty is a set of :class:`WorldConfig` knobs, so the world can leave the headroom the
paper's MLE models had (docs/design.md §3.4: a 4-class world of flat shapes saturates at mAP 91):
more ``thing_classes`` (pairs that differ in detail: circle/ring, square/frame), a wider
``size_range`` towards small objects, more ``max_objects`` (crowding, occlusion),
``texture_strength`` and ``noise_std`` (clutter), ``muted_prob`` (dull colours), no
``outline``. The cpu preset (:data:`WORLD_PRESETS` ``"cpu"``) is deliberately easy, so that a
small model learns to look within a CPU-hour of MLE: 64×64 images, three shapes (circle,
square, triangle) with a dark one-pixel rim, one to four things per image whose extent is
0.15–0.45 of the image side (almost none small), no muted colours. Crowding, small things,
muted colours and more classes are the ``gpu`` and ``paper`` presets' (and
:data:`CROWDED_64`'s, a 64×64 world of six classes and 0..12 things that left a cpu model
blind). Hidden things are not annotated in any preset. ``stuff_hues`` (off by default) paints
each stuff region in a palette hue independent of its class, at the same luma: the colorization
world's (:mod:`rlcv_lib.tasks.colorization.world`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import numpy as np

from rlcv_lib.config import ConfigError, added_field, hashed_fields
from rlcv_lib.data import captions as captions_lib
from rlcv_lib.data import palette

WORLD_VERSION = 3
"""Bumped whenever generated pixels or annotations change; part of every cache key."""

THING_CLASSES: tuple[str, ...] = (
    "circle", "ring", "square", "frame", "triangle", "diamond", "star", "cross")
"""Shape classes. Pairs differ in detail only: circle/ring, square/frame (hollow), square/
diamond (45° apart), star/cross."""

STUFF_CLASSES: tuple[str, ...] = ("sky", "wall", "water", "grass", "sand")
"""Stuff classes, in the top-to-bottom order their bands take in a scene."""

SPLITS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}
"""Split name -> code used in seeds and image ids (``image_id = code * 10**8 + index``)."""

RIM_SHADE = 0.55
"""A thing's one-pixel rim (``outline``) is painted at this share of its colour."""

COCO_REFERENCE_AREA = 640 * 480
COCO_SMALL, COCO_LARGE = 32 ** 2, 96 ** 2
SMALL_FRACTION = COCO_SMALL / COCO_REFERENCE_AREA
LARGE_FRACTION = COCO_LARGE / COCO_REFERENCE_AREA


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """The scenes world: image size, split sizes and every difficulty knob."""

    image_size: int = 64
    """Height and width of the generated images in pixels (8..512)."""
    world_seed: int = 0
    """World seed: the same (world_seed, split, index) always gives the same scene."""
    train_size: int = 50_000
    """Images in the train split (training streams over it in epochs)."""
    validation_size: int = 1024
    """Images in the validation split (checkpoint selection)."""
    test_size: int = 1000
    """Images in the test split (reported results)."""
    thing_classes: tuple[str, ...] = THING_CLASSES
    """Shape classes that appear, a subset of THING_CLASSES (order fixes the label ids)."""
    stuff_classes: tuple[str, ...] = STUFF_CLASSES
    """Stuff classes that appear, a subset of STUFF_CLASSES."""
    min_objects: int = 0
    """Fewest things painted per image."""
    max_objects: int = 12
    """Most things painted per image (the count is uniform in [min_objects, max_objects])."""
    size_range: tuple[float, float] = (0.05, 0.4)
    """Object extent as a fraction of the image side, drawn log-uniformly in this range."""
    min_visible_area: float = 0.0015
    """Fraction of the image area an instance must show to be annotated (at least 4 px)."""
    max_stuff_regions: int = 3
    """Most stuff bands per image (at least one)."""
    muted_prob: float = 0.35
    """Probability that a thing takes the muted (desaturated, same-luma) mode of its colour."""
    neutral_weight: float = 0.5
    """Draw weight of each neutral colour (black, grey, white) relative to a hue."""
    texture_strength: float = 1.0
    """Contrast of stuff textures (0 = flat colours)."""
    noise_std: float = 0.015
    """Std of per-pixel Gaussian noise on the image, in [0, 1] units."""
    outline: bool = True
    """Draw a darker one-pixel rim on things (makes edges visible against similar stuff)."""
    max_rotation: float = 20.0
    """Largest rotation of a thing in degrees (kept small: a square turned 45° is a diamond)."""
    stuff_hues: tuple[str, ...] = added_field(())
    """Vivid palette hues (names) that stuff regions are coloured in: each region draws one
    uniformly (from a random stream of its own) and takes its chroma at every pixel's own luma
    (:func:`stuff_rgb`), so the grey image stays the default world's. Empty: each stuff class
    keeps its own colour family (every world before this field)."""

    def __post_init__(self):
        _validate(self)


def _validate(cfg: WorldConfig) -> None:
    def bad(msg: str) -> None:
        raise ConfigError(f"invalid WorldConfig: {msg}")

    if not 8 <= cfg.image_size <= 512:
        bad(f"image_size must be in [8, 512], got {cfg.image_size}")
    for name in ("train_size", "validation_size", "test_size", "min_objects", "max_objects"):
        if getattr(cfg, name) < 0:
            bad(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.min_objects > cfg.max_objects:
        bad(f"min_objects ({cfg.min_objects}) > max_objects ({cfg.max_objects})")
    if cfg.max_objects > 200:
        bad(f"max_objects must be <= 200, got {cfg.max_objects}")
    for field, allowed in (("thing_classes", THING_CLASSES), ("stuff_classes", STUFF_CLASSES)):
        names = getattr(cfg, field)
        unknown = [n for n in names if n not in allowed]
        if unknown:
            bad(f"unknown {field} {unknown}; choose from {list(allowed)}")
        if len(set(names)) != len(names) or not names:
            bad(f"{field} must be non-empty and without repeats, got {list(names)}")
    lo, hi = cfg.size_range
    if not 0 < lo <= hi <= 1:
        bad(f"size_range must satisfy 0 < lo <= hi <= 1, got {cfg.size_range}")
    if not 0 <= cfg.min_visible_area < 0.5:
        bad(f"min_visible_area must be in [0, 0.5), got {cfg.min_visible_area}")
    if cfg.max_stuff_regions < 1:
        bad(f"max_stuff_regions must be >= 1, got {cfg.max_stuff_regions}")
    for name in ("muted_prob",):
        if not 0 <= getattr(cfg, name) <= 1:
            bad(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
    for name in ("neutral_weight", "texture_strength", "noise_std", "max_rotation"):
        if getattr(cfg, name) < 0:
            bad(f"{name} must be >= 0, got {getattr(cfg, name)}")
    vivid = [n for n, v in zip(palette.COLOR_NAMES, palette.COLOR_IS_VIVID, strict=True) if v]
    if [n for n in cfg.stuff_hues if n not in vivid] or len(set(cfg.stuff_hues)) != len(
            cfg.stuff_hues):
        bad(f"stuff_hues must be distinct vivid palette colours {vivid}, got "
            f"{list(cfg.stuff_hues)}")


WORLD_PRESETS: dict[str, WorldConfig] = {
    # Seconds per notebook: tiny images and splits.
    "smoke": WorldConfig(image_size=32, train_size=256, validation_size=64, test_size=64,
                         max_objects=6, size_range=(0.1, 0.5)),
    # 2-core CPU: an easy world a small model learns to look at within a CPU-hour of MLE: 64x64,
    # 1-4 large things of three distinct shapes, no muted colours. (The six-class, 0-12 object
    # world left a cpu model blind after 2,500 MLE steps: notes/detection_pretrain_spike.md.)
    "cpu": WorldConfig(image_size=64, train_size=20_000, thing_classes=(
        "circle", "square", "triangle"), min_objects=1, max_objects=4, size_range=(0.15, 0.45),
        muted_prob=0.0),
    # One GPU: larger, all eight classes, more clutter and smaller objects.
    "gpu": WorldConfig(image_size=128, train_size=100_000, validation_size=2048,
                       test_size=2000, max_objects=20, size_range=(0.03, 0.35)),
    # The paper trains on real COCO; this is the largest world for comparison runs.
    "paper": WorldConfig(image_size=256, train_size=200_000, validation_size=5000,
                         test_size=5000, max_objects=30, size_range=(0.02, 0.3)),
}

CROWDED_64 = WorldConfig(image_size=64, thing_classes=(
    "circle", "ring", "square", "frame", "triangle", "star"))
"""The crowded 64-px world (0-12 things of six classes in three detail pairs; the cpu preset up
to world version 3): a harder cpu-sized world, and the fixture of tests about crowding."""

# --------------------------------------------------------------------------- helpers


def min_visible_pixels(cfg: WorldConfig) -> int:
    """Fewest visible pixels an instance or stuff region needs to be annotated."""
    return max(4, math.ceil(cfg.min_visible_area * cfg.image_size ** 2))


def area_thresholds(height: int, width: int) -> tuple[float, float]:
    """(small, large) pixel-area limits: area < small is small, area >= large is large."""
    return SMALL_FRACTION * height * width, LARGE_FRACTION * height * width


def coco_area_ranges(height: int, width: int) -> list[list[float]]:
    """pycocotools ``params.areaRng`` (all, small, medium, large) scaled to this image size."""
    s, lg = area_thresholds(height, width)
    return [[0.0, 1e10], [0.0, s], [s, lg], [lg, 1e10]]


def size_bucket(area: float, height: int, width: int) -> str:
    s, lg = area_thresholds(height, width)
    return "small" if area < s else ("large" if area >= lg else "medium")


def split_size(cfg: WorldConfig, split: str) -> int:
    check_split(split)
    return getattr(cfg, f"{split}_size")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")


def image_id(split: str, index: int) -> int:
    return SPLITS[split] * 10 ** 8 + int(index)


def config_hash(cfg: WorldConfig) -> str:
    """Stable hash of the world version and config (cache keys); fields added at their
    default are left out (:func:`rlcv_lib.config.added_field`), so old cache keys stay."""
    blob = json.dumps([WORLD_VERSION, hashed_fields(cfg)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def categories(cfg: WorldConfig) -> list[dict[str, Any]]:
    """COCO panoptic categories: things (isthing=1) then stuff (isthing=0)."""
    cats = []
    for i, name in enumerate(cfg.thing_classes):
        cats.append({"id": i + 1, "name": name, "supercategory": "shape", "isthing": 1,
                     "color": _category_color(i)})
    for j, name in enumerate(cfg.stuff_classes):
        cats.append({"id": len(cfg.thing_classes) + j + 1, "name": name,
                     "supercategory": "stuff", "isthing": 0, "color": _STUFF_BASE[name][0]})
    return cats


def _category_color(i: int) -> list[int]:
    rgb = palette.COLOR_RGB[i % len(palette.COLOR_RGB)]
    return [int(round(255 * c)) for c in rgb]


# --------------------------------------------------------------------------- stuff

# name -> (colour family as uint8 RGB triples, texture kind)
_STUFF_BASE: dict[str, list[list[int]]] = {
    "sky": [[150, 190, 225], [175, 200, 215], [120, 165, 210], [205, 190, 175]],
    "wall": [[150, 85, 65], [135, 125, 120], [165, 120, 90]],
    "water": [[50, 105, 140], [40, 120, 125], [70, 95, 120]],
    "grass": [[85, 135, 60], [105, 140, 55], [70, 115, 70]],
    "sand": [[210, 190, 140], [195, 170, 125], [220, 200, 160]],
}


def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """[size, cells + 1] linear-interpolation weights from ``cells + 1`` knots to ``size``."""
    pos = np.linspace(0, cells, size, dtype=np.float32)
    lo = np.minimum(pos.astype(int), cells - 1)
    frac = pos - lo
    m = np.zeros((size, cells + 1), np.float32)
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled uniform noise in [-1, 1], [h, w] (soft blobs ``cells`` across)."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    return _interp_matrix(h, cells) @ grid @ _interp_matrix(w, cells).T


def _stuff_texture(name: str, rng: np.random.Generator, n: int, strength: float) -> np.ndarray:
    """Float RGB [n, n, 3] texture of one stuff class (colour family + pattern)."""
    family = _STUFF_BASE[name]
    base = np.asarray(family[rng.integers(len(family))], np.float32) / 255
    base = np.clip(base + rng.uniform(-0.04, 0.04, 3), 0, 1).astype(np.float32)
    yy = (np.arange(n, dtype=np.float32)[:, None] + 0.5) / n
    xx = (np.arange(n, dtype=np.float32)[None, :] + 0.5) / n
    if name == "sky":  # lighter towards the horizon, soft white clouds
        shade = 0.10 * (yy - 0.5) + 0 * xx
        clouds = np.clip(_smooth_noise(rng, n, n, 4), 0, None) * 0.35
        pattern = shade[..., None] + clouds[..., None] * (1 - base)
    elif name == "wall":  # bricks with darker mortar, alternate rows offset
        rows = rng.integers(5, 9)
        by = yy * rows
        bx = xx * rows / 2 + 0.5 * (np.floor(by) % 2)
        mortar = (np.abs(by - np.round(by)) < 0.08) | (np.abs(bx - np.round(bx)) < 0.04)
        brick = _smooth_noise(rng, n, n, rows) * 0.05
        pattern = (brick - 0.22 * mortar)[..., None] + 0 * base
    elif name == "water":  # horizontal ripples
        freq, phase = rng.uniform(10, 16), rng.uniform(0, 2 * np.pi)
        wobble = _smooth_noise(rng, n, n, 3)
        ripple = np.sin(2 * np.pi * freq * yy + 2.0 * wobble + phase)
        pattern = (0.07 * ripple)[..., None] + 0 * base
    elif name == "grass":  # blades: vertical streaks plus fine speckle
        streaks = rng.uniform(-1, 1, (1, n)).astype(np.float32)
        speck = rng.uniform(-1, 1, (n, n)).astype(np.float32)
        pattern = (0.06 * streaks + 0.05 * speck + 0.05 * _smooth_noise(rng, n, n, 3))
        pattern = pattern[..., None] * np.array([0.6, 1.0, 0.5], np.float32)
    elif name == "sand":  # speckled dots and soft dunes
        dots = (rng.uniform(0, 1, (n, n)) < 0.08).astype(np.float32)
        pattern = (0.06 * _smooth_noise(rng, n, n, 3) - 0.10 * dots)[..., None] + 0 * base
    else:  # pragma: no cover - names are validated
        raise ValueError(name)
    return np.clip(base + strength * pattern, 0, 1).astype(np.float32)


def stuff_rgb(luma: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """float RGB [..., 3] = ``luma + s * chroma`` with, per pixel, the largest ``s <= 1`` that
    keeps every channel in [0, 1]: the chroma (``chroma @ LUMA = 0``) shrinks towards the grey
    where it does not fit, and the luma stays exactly. ``luma`` [...] on [0, 1], ``chroma``
    [..., 3] (broadcast against it)."""
    y = np.asarray(luma, np.float32)[..., None]
    c = np.asarray(chroma, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(c > 0, (1 - y) / c, np.where(c < 0, y / -c, np.inf))
    return (y + np.clip(room.min(-1, keepdims=True), 0, 1) * c).astype(np.float32)


def hue_chroma(names: tuple[str, ...]) -> np.ndarray:
    """float [len(names), 3]: each named palette colour minus its grey level (its chroma)."""
    idx = [palette.color_index(n) for n in names]
    return (palette.COLOR_RGB[idx] - palette.COLOR_LEVEL[idx, None]).astype(np.float32)


def stuff_chroma(cfg: WorldConfig, name: str) -> np.ndarray:
    """float [F, 3]: the chromas a region of stuff class ``name`` is drawn in, each equally
    likely: the ``stuff_hues``' (:func:`hue_chroma`), or without them the class's own colour
    family (each base colour minus its luma; before its texture and a small jitter)."""
    if cfg.stuff_hues:
        return hue_chroma(cfg.stuff_hues)
    base = np.asarray(_STUFF_BASE[name], np.float32) / 255
    return (base - (base @ palette.LUMA)[:, None]).astype(np.float32)


def _recolour_stuff(cfg: WorldConfig, rng: np.random.Generator, image: np.ndarray,
                    bands: np.ndarray, owner: np.ndarray, regions: int) -> None:
    """Gives each stuff band's visible pixels (``owner == 0``) of ``image`` (float [n,n,3] on
    [0, 1], noise included) the chroma of a hue drawn from ``cfg.stuff_hues``, at their luma."""
    chroma = hue_chroma(cfg.stuff_hues)
    grey = image @ palette.LUMA  # [n, n]
    for b in range(regions):
        sel = (bands == b) & (owner == 0)
        image[sel] = stuff_rgb(grey[sel], chroma[rng.integers(len(chroma))])


def _stuff_layout(cfg: WorldConfig, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Picks 1..max_stuff_regions classes in their natural top-to-bottom order and returns
    them with a band map int [n, n] (band index per pixel) separated by wavy horizons."""
    n = cfg.image_size
    k = int(rng.integers(1, min(cfg.max_stuff_regions, len(cfg.stuff_classes)) + 1))
    chosen = rng.choice(len(cfg.stuff_classes), size=k, replace=False)
    names = sorted((cfg.stuff_classes[i] for i in chosen), key=STUFF_CLASSES.index)
    heights = np.sort(rng.uniform(0.2, 0.85, k - 1)) * n
    xs = np.arange(n, dtype=np.float32) + 0.5
    ys = np.arange(n, dtype=np.float32)[:, None] + 0.5
    bands = np.zeros((n, n), np.int32)
    for h in heights:
        amp = rng.uniform(0, 0.06) * n
        period = rng.uniform(0.5, 1.5) * n
        line = h + amp * np.sin(2 * np.pi * xs / period + rng.uniform(0, 2 * np.pi))
        bands += (ys >= line[None, :]).astype(np.int32)
    return names, bands


# --------------------------------------------------------------------------- things


def _star_inside(u: np.ndarray, v: np.ndarray, inner: float = 0.45) -> np.ndarray:
    """Points (u, v) inside a five-pointed star of outer radius 1, one tip pointing up."""
    theta = np.arctan2(u, -v)  # 0 = up
    sector = 2 * np.pi / 5
    a = np.abs(np.mod(theta, sector) - sector / 2)  # 0 at an inner vertex, sector/2 at a tip
    a = sector / 2 - a  # 0 at a tip
    r = np.hypot(u, v)
    # edge from the tip (1, 0) to the inner vertex (inner, sector / 2) in polar coordinates
    px, py = r * np.cos(a), r * np.sin(a)
    ix, iy = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
    cross = (ix - 1) * py - iy * (px - 1)
    return cross >= 0


def shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of a unit shape in its own frame (u right, v down, both in [-1, 1])."""
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return u * u + v * v <= 1
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.52 ** 2)
    if name == "square":
        return np.maximum(au, av) <= 0.9
    if name == "frame":
        m = np.maximum(au, av)
        return (m <= 0.9) & (m >= 0.5)
    if name == "triangle":  # apex up
        return (v <= 0.85) & (au <= (v + 1) * 0.55)
    if name == "diamond":
        return au + av <= 1
    if name == "star":
        return _star_inside(u, v)
    if name == "cross":
        return (np.maximum(au, av) <= 1) & (np.minimum(au, av) <= 0.32)
    raise ValueError(f"unknown thing class {name!r}; choose from {list(THING_CLASSES)}")


@dataclasses.dataclass
class Thing:
    """One annotated instance (its visible part)."""

    label: int
    name: str
    color: str
    muted: bool
    segment_id: int
    area: int
    bbox: tuple[int, int, int, int]
    """Visible pixels' inclusive pixel box (y0, x0, y1, x1)."""
    ground: str = ""
    """The stuff class under the box centre (what captions say the thing stands on)."""


@dataclasses.dataclass
class Stuff:
    name: str
    category_id: int
    segment_id: int
    area: int
    bbox: tuple[int, int, int, int]


@dataclasses.dataclass
class Scene:
    """A generated scene with everything the annotations and statistics are derived from."""

    image: np.ndarray  # uint8 [H, W, 3]
    panoptic: np.ndarray  # int32 [H, W] segment ids, 0 = void
    things: list[Thing]
    stuff: list[Stuff]
    painted: int  # things painted, annotated or not
    captions: list[str]
    image_id: int


def _pixel_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def interior(mask: np.ndarray) -> np.ndarray:
    """bool [H,W]: the pixels of ``mask`` whose four neighbours are in it too (a thing's rim is
    the rest of its mask)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def _paint_things(cfg: WorldConfig, rng: np.random.Generator, image: np.ndarray,
                  owner: np.ndarray) -> list[dict[str, Any]]:
    """Paints things into ``image`` (float [n,n,3]) and ``owner`` (int [n,n], slot+1)."""
    n = cfg.image_size
    min_px = min_visible_pixels(cfg)
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    weights = np.where(palette.COLOR_IS_VIVID, 1.0, cfg.neutral_weight)
    weights = weights / weights.sum()
    lo, hi = np.log(cfg.size_range[0]), np.log(cfg.size_range[1])
    painted = []
    for slot in range(count):
        label = int(rng.integers(len(cfg.thing_classes)))
        name = cfg.thing_classes[label]
        extent = float(np.exp(rng.uniform(lo, hi))) * n
        aspect = float(np.exp(rng.uniform(-0.25, 0.25)))
        hy, hx = 0.5 * extent * np.sqrt(aspect), 0.5 * extent / np.sqrt(aspect)
        cy, cx = rng.uniform(0.15 * hy, n - 0.15 * hy), rng.uniform(0.15 * hx, n - 0.15 * hx)
        angle = np.deg2rad(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
        color = int(rng.choice(len(weights), p=weights))
        muted = bool(palette.COLOR_IS_VIVID[color] and rng.uniform() < cfg.muted_prob)
        rgb = palette.thing_rgb(color, muted)
        reach = max(hy, hx) * 1.45 + 1
        y0, y1 = max(0, int(cy - reach)), min(n, int(np.ceil(cy + reach)))
        x0, x1 = max(0, int(cx - reach)), min(n, int(np.ceil(cx + reach)))
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
        c, s = np.cos(angle), np.sin(angle)
        u, v = (c * dx + s * dy) / hx, (-s * dx + c * dy) / hy
        mask = shape_mask(name, u, v)
        if mask.sum() < min_px:  # too small to see even unoccluded: never painted
            continue
        window = image[y0:y1, x0:x1]
        window[mask] = rgb
        if cfg.outline and min(hy, hx) >= 2.5:
            # the window extends past the shape, except at image edges
            window[mask & ~interior(mask)] = RIM_SHADE * rgb
        owner[y0:y1, x0:x1][mask] = slot + 1
        painted.append({"slot": slot + 1, "label": label, "name": name, "muted": muted,
                        "color": palette.COLOR_NAMES[color], "window": (y0, x0, y1, x1)})
    return painted


def _rng(cfg: WorldConfig, split: str, index: int) -> tuple[np.random.Generator, ...]:
    ss = np.random.SeedSequence([WORLD_VERSION, cfg.world_seed, SPLITS[split], int(index)])
    return tuple(np.random.default_rng(s) for s in ss.spawn(3))


def _hue_rng(cfg: WorldConfig, split: str, index: int) -> np.random.Generator:
    """The stream of the stuff hues (``stuff_hues``): the scene's fourth spawned child, so the
    three streams of :func:`_rng` (and every default world) are untouched."""
    ss = np.random.SeedSequence([WORLD_VERSION, cfg.world_seed, SPLITS[split], int(index)])
    return np.random.default_rng(ss.spawn(4)[3])


def generate(cfg: WorldConfig, split: str, index: int) -> Scene:
    """The scene ``index`` of ``split``: a pure function of (config, split, index)."""
    check_split(split)
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    rng_stuff, rng_things, rng_text = _rng(cfg, split, index)
    n = cfg.image_size
    min_px = min_visible_pixels(cfg)
    stuff_names, bands = _stuff_layout(cfg, rng_stuff)
    image = np.zeros((n, n, 3), np.float32)
    for b, name in enumerate(stuff_names):
        sel = bands == b
        image[sel] = _stuff_texture(name, rng_stuff, n, cfg.texture_strength)[sel]
    owner = np.zeros((n, n), np.int32)
    painted = _paint_things(cfg, rng_things, image, owner)
    if cfg.noise_std > 0:
        image += cfg.noise_std * rng_stuff.standard_normal(image.shape, dtype=np.float32)
    if cfg.stuff_hues:
        image = np.clip(image, 0, 1)
        _recolour_stuff(cfg, _hue_rng(cfg, split, index), image, bands, owner, len(stuff_names))
    image_u8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)

    # One code per pixel: thing slot 1..max_objects, else max_objects + 1 + stuff band.
    first_band = cfg.max_objects + 1
    code = np.where(owner > 0, owner, first_band + bands)
    areas = np.bincount(code.ravel(), minlength=first_band + len(stuff_names))
    lut = np.zeros(len(areas), np.int32)  # code -> segment id (0 = void)
    things: list[Thing] = []
    seg = 0
    for p in painted:
        area = int(areas[p["slot"]])
        if area < min_px:
            continue
        seg += 1
        lut[p["slot"]] = seg
        y0, x0 = p["window"][:2]
        wy0, wx0, wy1, wx1 = _pixel_box(owner[p["window"][0]:p["window"][2],
                                              p["window"][1]:p["window"][3]] == p["slot"])
        box = (y0 + wy0, x0 + wx0, y0 + wy1, x0 + wx1)
        things.append(Thing(label=p["label"], name=p["name"], color=p["color"],
                            muted=p["muted"], segment_id=seg, area=area, bbox=box,
                            ground=stuff_names[bands[(box[0] + box[2]) // 2,
                                                     (box[1] + box[3]) // 2]]))
    stuff: list[Stuff] = []
    for b, name in enumerate(stuff_names):
        area = int(areas[first_band + b])
        if area < min_px:
            continue
        seg += 1
        lut[first_band + b] = seg
        stuff.append(Stuff(name=name, segment_id=seg, area=area,
                           bbox=_pixel_box(code == first_band + b),
                           category_id=len(cfg.thing_classes) + cfg.stuff_classes.index(name)
                           + 1))
    panoptic = lut[code]
    mentions = [captions_lib.Mention(t.name, t.color, size_bucket(t.area, n, n), t.bbox,
                                     t.ground) for t in things]
    caps = captions_lib.describe(mentions, [s.name for s in stuff], rng_text)
    return Scene(image=image_u8, panoptic=panoptic, things=things, stuff=stuff,
                 painted=len(painted), captions=caps, image_id=image_id(split, index))


def to_example(scene: Scene) -> dict[str, Any]:
    """The example dict of a scene (docs/design.md §3.2)."""
    h, w = scene.panoptic.shape
    boxes = np.array([[t.bbox[0] / h, t.bbox[1] / w, (t.bbox[2] + 1) / h, (t.bbox[3] + 1) / w]
                      for t in scene.things], np.float32).reshape(-1, 4)
    segments = []
    for t in scene.things:
        segments.append(_segment(t.segment_id, t.label + 1, True, t.area, t.bbox))
    for s in scene.stuff:
        segments.append(_segment(s.segment_id, s.category_id, False, s.area, s.bbox))
    return {
        "image": scene.image,
        "image_id": scene.image_id,
        "boxes": boxes,
        "labels": np.array([t.label for t in scene.things], np.int32),
        "panoptic": scene.panoptic,
        "segments": segments,
        "captions": list(scene.captions),
    }


def _segment(seg_id: int, cat: int, thing: bool, area: int, box: tuple[int, ...]) -> dict:
    y0, x0, y1, x1 = box
    return {"id": int(seg_id), "category_id": int(cat), "is_thing": bool(thing),
            "isthing": int(thing), "iscrowd": 0, "area": int(area),
            "bbox": [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]}


def example(cfg: WorldConfig, split: str, index: int) -> dict[str, Any]:
    """``to_example(generate(cfg, split, index))``."""
    return to_example(generate(cfg, split, index))


def annotation_hash(ex: dict[str, Any]) -> str:
    """Hash of an example's pixels and annotations (determinism tests, cache checks)."""
    h = hashlib.sha256()
    for key in ("image", "boxes", "labels", "panoptic"):
        a = np.ascontiguousarray(ex[key])
        h.update(key.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    h.update(json.dumps([ex["image_id"], ex["segments"], ex["captions"]]).encode())
    return h.hexdigest()
