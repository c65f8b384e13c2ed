"""The named colour palette of the scenes world.

Thing colours are named (captions use the names) and arranged on a few *grey levels*: every
vivid hue is shifted so that its luma (ITU-R BT.601, the grey the colorization task sees)
equals its level exactly, so several hues share one grey and grey -> colour is truly ambiguous.
A frequent *muted* mode draws the same hue pulled towards its grey (same name, same luma, low
saturation); an MLE colourizer that averages over hues and modes drifts dull, as in the paper.
Three neutrals (black, grey, white) have luma levels of their own.

All colours are float RGB in [0, 1].
"""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
"""BT.601 luma weights: ``grey = rgb @ LUMA`` (what ``to_grey`` uses)."""

# level -> (name, a representative RGB before the luma shift)
_VIVID: dict[float, tuple[tuple[str, tuple[float, float, float]], ...]] = {
    0.32: (("red", (0.80, 0.10, 0.08)), ("blue", (0.12, 0.28, 0.90)),
           ("purple", (0.52, 0.14, 0.70)), ("brown", (0.52, 0.30, 0.10))),
    0.52: (("green", (0.16, 0.62, 0.16)), ("orange", (0.98, 0.45, 0.02)),
           ("pink", (0.95, 0.38, 0.65))),
    0.74: (("yellow", (0.92, 0.80, 0.08)), ("cyan", (0.30, 0.85, 0.92)),
           ("lavender", (0.78, 0.66, 0.98))),
}
_NEUTRAL = (("black", 0.10), ("grey", 0.52), ("white", 0.93))

MUTED_SATURATION = 0.35
"""A muted colour is ``grey + MUTED_SATURATION * (vivid - grey)`` (same hue name and luma)."""


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 grey of float RGB ``[..., 3]`` -> ``[...]``."""
    return np.asarray(rgb, np.float32) @ LUMA


def _at_level(rgb: tuple[float, float, float], level: float) -> np.ndarray:
    """Moves ``rgb`` to luma ``level``, keeping its hue: ``level + s * (rgb - luma(rgb))``
    with the largest saturation factor ``s <= 1`` that stays inside [0, 1]."""
    c = np.asarray(rgb, np.float64)
    chroma = c - float(c @ LUMA.astype(np.float64))
    s = 1.0
    for d in chroma:
        if d > 0:
            s = min(s, (1 - level) / d)
        elif d < 0:
            s = min(s, level / -d)
    return (level + s * chroma).astype(np.float32)


def _build() -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    names, rgbs, levels, vivid = [], [], [], []
    for level, entries in _VIVID.items():
        for name, rgb in entries:
            names.append(name)
            rgbs.append(_at_level(rgb, level))
            levels.append(level)
            vivid.append(True)
    for name, level in _NEUTRAL:
        names.append(name)
        rgbs.append(np.full(3, level, np.float32))
        levels.append(level)
        vivid.append(False)
    return tuple(names), np.stack(rgbs), np.asarray(levels, np.float32), np.asarray(vivid)


COLOR_NAMES, COLOR_RGB, COLOR_LEVEL, COLOR_IS_VIVID = _build()
"""Palette: names, RGB [C,3], grey level [C], and whether the colour has a hue (not neutral)."""

GREY_LEVELS: tuple[float, ...] = tuple(sorted(set(COLOR_LEVEL.tolist())))


def color_index(name: str) -> int:
    """Index of a named colour; raises naming the unknown name and the palette."""
    if name not in COLOR_NAMES:
        raise ValueError(f"unknown colour {name!r}; palette: {list(COLOR_NAMES)}")
    return COLOR_NAMES.index(name)


def thing_rgb(index: int, muted: bool) -> np.ndarray:
    """RGB of palette colour ``index``, optionally in the muted mode (same luma)."""
    rgb = COLOR_RGB[index]
    if not muted:
        return rgb
    grey = COLOR_LEVEL[index]
    return (grey + MUTED_SATURATION * (rgb - grey)).astype(np.float32)


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[..., H, W, 3]`` -> uint8 grey ``[..., H, W, 3]`` (BT.601, replicated)."""
    g = np.round(image.astype(np.float32) @ LUMA).clip(0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)
