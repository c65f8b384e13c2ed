"""Statistics of the scenes world: what the notebook plots and the report quotes.

All functions take generated :class:`~rlcv_lib.data.scenes.Scene` objects (or captions) and
return plain numbers, arrays and dicts.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlcv_lib.data import palette, scenes


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram."""
    p = np.asarray(counts, np.float64)
    p = p[p > 0] / p.sum() if p.sum() else p[:0]
    return float(-(p * np.log2(p)).sum())


def conditional_entropy_bits(joint: np.ndarray) -> float:
    """H(Y | X) in bits from a joint count table ``[X, Y]``."""
    joint = np.asarray(joint, np.float64)
    total = joint.sum()
    if not total:
        return 0.0
    return float(sum(row.sum() / total * entropy_bits(row) for row in joint if row.sum()))


def object_stats(cfg: scenes.WorldConfig, sc_list: Sequence[scenes.Scene]) -> dict[str, Any]:
    """Counts, size buckets, class balance, stuff presence and colour-name tables."""
    n = cfg.image_size
    counts = np.array([len(s.things) for s in sc_list])
    painted = np.array([s.painted for s in sc_list])
    buckets = collections.Counter(scenes.size_bucket(t.area, n, n)
                                  for s in sc_list for t in s.things)
    classes = collections.Counter(t.name for s in sc_list for t in s.things)
    stuff = collections.Counter(st.name for s in sc_list for st in s.stuff)
    levels = list(palette.GREY_LEVELS)
    names = list(palette.COLOR_NAMES)
    joint = np.zeros((len(levels), len(names)), np.int64)  # grey level x colour name
    muted = 0
    for s in sc_list:
        for t in s.things:
            i = palette.color_index(t.color)
            joint[levels.index(float(palette.COLOR_LEVEL[i])), i] += 1
            muted += t.muted
    total = max(1, int(counts.sum()))
    return {
        "images": len(sc_list),
        "objects_per_image": counts,
        "painted_per_image": painted,
        "mean_objects": float(counts.mean()),
        "max_objects": int(counts.max(initial=0)),
        "crowded_fraction": float(np.mean(counts >= 8)),
        "empty_fraction": float(np.mean(counts == 0)),
        "size_buckets": {b: buckets.get(b, 0) for b in ("small", "medium", "large")},
        "class_counts": {c: classes.get(c, 0) for c in cfg.thing_classes},
        "stuff_presence": {c: stuff.get(c, 0) / len(sc_list) for c in cfg.stuff_classes},
        "grey_levels": levels, "color_names": names, "level_color_counts": joint,
        "muted_fraction": muted / total,
        "color_entropy_given_grey_bits": conditional_entropy_bits(joint),
        "color_entropy_bits": entropy_bits(joint.sum(0)),
    }


def rgb_to_hue_sat(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB [..., 3] -> (hue in [0, 1), HSV saturation in [0, 1])."""
    x = image.astype(np.float32) / 255
    mx, mn = x.max(-1), x.min(-1)
    d = mx - mn
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.where(d > 0, d, 1)
    h = np.where(mx == r, ((g - b) / safe) % 6,
                 np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    sat = np.where(mx > 0, d / np.where(mx > 0, mx, 1), 0)
    return np.where(d > 0, h, 0) % 1.0, sat


def pixel_hue_given_grey(images: np.ndarray, grey_bins: int = 16, hue_bins: int = 12,
                         min_saturation: float = 0.2) -> dict[str, Any]:
    """Joint histogram of (grey bin, hue bin) over coloured pixels of ``images`` [N,H,W,3];
    returns it with H(hue | grey) in bits, per grey bin and overall."""
    flat = images.reshape(-1, 3)
    hue, sat = rgb_to_hue_sat(flat)
    grey = flat.astype(np.float32) @ palette.LUMA / 255
    keep = sat >= min_saturation
    g = np.minimum((grey[keep] * grey_bins).astype(int), grey_bins - 1)
    h = np.minimum((hue[keep] * hue_bins).astype(int), hue_bins - 1)
    joint = np.zeros((grey_bins, hue_bins), np.int64)
    np.add.at(joint, (g, h), 1)
    return {"joint": joint, "per_grey_bits": np.array([entropy_bits(r) for r in joint]),
            "hue_given_grey_bits": conditional_entropy_bits(joint),
            "hue_bits": entropy_bits(joint.sum(0)), "coloured_fraction": float(keep.mean())}


def caption_stats(captions: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Lengths, vocabulary, word frequencies and distinctness of per-image caption lists."""
    flat = [c for caps in captions for c in caps]
    lengths = np.array([len(c.split()) for c in flat])
    words = collections.Counter(w for c in flat for w in c.split())
    return {"lengths": lengths, "mean_length": float(lengths.mean()),
            "vocabulary": len(words), "top_words": words.most_common(25),
            "distinct_fraction": len(set(flat)) / max(1, len(flat))}


def reference_cider(captions: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """CIDEr-D (pycocoevalcap) of each reference against the image's other references.

    For k = 0..4 the k-th caption of every image is scored as a candidate against the other
    four (document frequencies from those references, as in the COCO evaluation). Returns the
    mean and the per-(image, reference) scores [N, 5]: the ceiling a captioner can reach.
    """
    from pycocoevalcap.cider.cider import Cider

    n_ref = len(captions[0])
    scores = np.zeros((len(captions), n_ref))
    for k in range(n_ref):
        gts = {i: [c for j, c in enumerate(caps) if j != k] for i, caps in enumerate(captions)}
        res = {i: [caps[k]] for i, caps in enumerate(captions)}
        _, per_image = Cider().compute_score(gts, res)
        scores[:, k] = per_image
    return float(scores.mean()), scores
