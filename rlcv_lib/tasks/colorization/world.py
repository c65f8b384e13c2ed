"""The scenes world colorization is measured on: one with headroom (issue 19).

In the detection world (:data:`rlcv_lib.data.scenes.WORLD_PRESETS`) the stuff bands keep their
class's colour family (grass is green), which a model reads off the texture, and things cover
about an eighth of the pixels; every colourizer then lands near the truth's colourfulness and the
best in-palette recolouring is not 2× the dull bound (notes/colorization_world.md). The
colorization world changes what colours are drawn, not what the grey image shows:

* ``stuff_hues``: every stuff region takes one of :data:`STUFF_HUES`, uniformly, at each
  pixel's own luma, so a band's hue is independent of its class and texture, as a thing's is;
* things larger and more of them (``size_range``, ``min_objects``/``max_objects``): about a
  third of the pixels at 64², none tiny;
* ``muted_prob``: a thing draws the desaturated mode of its hue a third of the time, as in the
  default world.

Chosen on validation scenes by ``experiments/colorization_world.py`` (the table is in
notes/colorization_world.md). ``paper`` is the default paper world: the paper preset colourizes
ImageNet through its adapter, not the scenes world.
"""

from __future__ import annotations

import dataclasses

from rlcv_lib.data import palette
from rlcv_lib.data.scenes import WORLD_PRESETS, WorldConfig

STUFF_HUES: tuple[str, ...] = tuple(
    n for n, vivid in zip(palette.COLOR_NAMES, palette.COLOR_IS_VIVID, strict=True) if vivid)
"""The hues stuff regions draw from: every vivid palette hue (ten, on three grey levels)."""

OBJECTS = {"min_objects": 2, "max_objects": 6, "size_range": (0.25, 0.6), "muted_prob": 0.35}
"""The things of the colorization world at 64² and below (2–6 things, 0.25–0.6 of the side)."""

COLORIZATION_WORLD_PRESETS: dict[str, WorldConfig] = {
    "smoke": dataclasses.replace(WORLD_PRESETS["smoke"], stuff_hues=STUFF_HUES, **OBJECTS),
    "cpu": dataclasses.replace(WORLD_PRESETS["cpu"], stuff_hues=STUFF_HUES, **OBJECTS),
    "gpu": dataclasses.replace(WORLD_PRESETS["gpu"], stuff_hues=STUFF_HUES, min_objects=3,
                               max_objects=12, size_range=(0.12, 0.5)),
    "paper": WORLD_PRESETS["paper"],
}
"""The ``world`` section of the colorization task, per preset (module docstring)."""
