"""The colorization world: its presets, and the headroom it was chosen for (on validation)."""

import numpy as np
import pytest

from rlcv_lib.data import scenes
from rlcv_lib.tasks.colorization import references as refs
from rlcv_lib.tasks.colorization.world import COLORIZATION_WORLD_PRESETS, STUFF_HUES


def test_presets_change_colours_and_things_not_sizes_or_splits():
    assert set(COLORIZATION_WORLD_PRESETS) == set(scenes.WORLD_PRESETS)
    assert COLORIZATION_WORLD_PRESETS["paper"] == scenes.WORLD_PRESETS["paper"]
    assert len(STUFF_HUES) == 10
    for name in ("smoke", "cpu", "gpu"):
        world, base = COLORIZATION_WORLD_PRESETS[name], scenes.WORLD_PRESETS[name]
        assert world.stuff_hues == STUFF_HUES
        for f in ("image_size", "train_size", "validation_size", "test_size", "thing_classes"):
            assert getattr(world, f) == getattr(base, f), (name, f)


def rows(world: scenes.WorldConfig, n: int) -> dict[str, float]:
    ex = [scenes.example(world, "validation", i) for i in range(n)]
    x = np.stack([e["image"] for e in ex]).astype(np.float32) / 127.5 - 1
    pan, segs = np.stack([e["panoptic"] for e in ex]), [e["segments"] for e in ex]
    things = np.mean([np.isin(p, [s["id"] for s in g if s["isthing"]])
                      for p, g in zip(pan, segs, strict=True)])
    dull = refs.dull_bound(x, pan, segs, world)
    best, _ = refs.best_recolouring(x, pan, segs, world, restarts=2)
    m = refs.colourfulness_rows({"truth": x, "dull": dull, "ceiling": best})
    return {**m, "things": float(things)}


@pytest.mark.parametrize("name, room", [("cpu", True), ("detection cpu", False)])
def test_the_colorization_world_has_room_for_twice_the_dull_bound(name, room):
    """On 32 validation scenes: the ceiling well above 2x the dull bound, the truth clearly
    above it, a third of the pixels things; the detection cpu world has none of that."""
    world = COLORIZATION_WORLD_PRESETS["cpu"] if room else scenes.WORLD_PRESETS["cpu"]
    r = rows(world, 32)
    assert r["dull"] < r["truth"] < r["ceiling"]
    assert (r["ceiling"] > 4 * r["dull"] and r["truth"] > 2.5 * r["dull"]
            and r["things"] > 0.28) == room, r
